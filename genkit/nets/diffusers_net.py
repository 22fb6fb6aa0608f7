"""A diffusers denoiser as a genkit net (`model.name: diffusers`): a `UNet2DModel` or a
`DiTTransformer2DModel` read from a diffusers folder (or handed over built, `from_module`), called
in genkit's convention `net(x, t in [0, 1], y)`.

Time: diffusers models take the scheduler's timestep k. On DDPM's discrete path step k sits at
t = (k + 1) / T (`genkit.paths.DiscreteVPPath`), so the net is called at k = t T - 1; on a
rectified flow the flow-matching schedulers' k is sigma T = t T. Outputs are the model's own
prediction (its scheduler's `prediction_type`, which `genkit.loading.from_diffusers` makes the
model's); a model that also predicts its variance (twice the input channels) gives its first half.

Classes: a UNet's class embedding (`num_class_embeds`) has no null class of its own, so it samples
with guidance 1, unless `null_class` says its training dropped labels to its last row (then it has
`num_class_embeds` - 1 classes and takes guidance, with that row as genkit's null class); DiT's
label table (`num_embeds_ada_norm` classes) has one more row, the null class its training dropped
labels to (Peebles & Xie 2023), which is genkit's null class too. An SD3 transformer (Esser et al.
2024) is conditioned on text-encoder outputs, which genkit takes as given `Embeddings`: one
(prompt, pooled) pair per class and a last one, the null class (the empty prompt's), or a single
pair for a model sampled unconditionally.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from genkit.registry import ArgumentError, ConfigError

CLASSES = ("UNet2DModel", "DiTTransformer2DModel", "SD3Transformer2DModel")  # diffusers denoisers genkit calls
EMBEDDED = ("SD3Transformer2DModel",)  # conditioned on text-encoder outputs (`Embeddings`), not on labels


@dataclass
class DiffusersNetConfig:
    """`model.diffusers`: the folder of a diffusers model (its `config.json` and weights), the
    model's `config.json` itself (filled in from the folder when the config is checked, so that
    checkpoints and exports rebuild the net without the folder), and the number of training
    timesteps its timestep counts (a flow scheduler's `num_train_timesteps`; DDPM's is
    `method.ddpm.num_timesteps`)."""

    path: str = ""
    config: dict = field(default_factory=dict)
    flow_timesteps: int = 1000
    embeddings: str = ""  # an SD3 transformer's `Embeddings`: a safetensors file holding `prompt` and `pooled`
    embeddings_shape: tuple[int, ...] = ()  # (K + 1, L, D, P), filled in: checkpoints keep the embeddings themselves
    null_class: bool = False  # a UNet2DModel's last class embedding is the null class its training dropped labels to


@dataclass
class Embeddings:
    """An SD3 transformer's conditioning per class: `prompt` [K + 1, L, D] (its `encoder_hidden_states`)
    and `pooled` [K + 1, P] (its `pooled_projections`), row K the null class (the empty prompt); or
    one row each, a model sampled unconditionally. The outputs of the pipeline's `encode_prompt`."""

    prompt: torch.Tensor
    pooled: torch.Tensor

    def __post_init__(self):
        if self.prompt.ndim != 3 or self.pooled.ndim != 2 or len(self.prompt) != len(self.pooled):
            raise ArgumentError("embeddings", f"expected prompt [K + 1, L, D] and pooled [K + 1, P] embeddings, got "
                                              f"{list(self.prompt.shape)} and {list(self.pooled.shape)}")

    @property
    def num_classes(self) -> int:
        return len(self.prompt) - 1 if len(self.prompt) > 1 else 0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (*self.prompt.shape, self.pooled.shape[1])

    @classmethod
    def read(cls, path: str | Path) -> "Embeddings":
        """The embeddings in a safetensors file (`prompt`, `pooled`)."""
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
            return cls(tensors["prompt"], tensors["pooled"])
        except (OSError, KeyError, ValueError) as err:
            raise ConfigError(f"model.diffusers.embeddings: {path} holds no `prompt` and `pooled` embeddings "
                              f"({type(err).__name__})") from None

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> "Embeddings":
        """Placeholders of `shape` (K + 1, L, D, P), for weights that hold the embeddings to load into."""
        rows, tokens, width, pooled = shape
        return cls(torch.zeros(rows, tokens, width), torch.zeros(rows, pooled))


class DiffusersDenoiser(nn.Module):
    """`model` (a diffusers denoiser) called at timestep k = t `scale` - `offset` (see the module);
    `num_classes` > 0 for a class-conditional model, whose label `num_classes` is the null class
    where `has_null_class`; an SD3 transformer with its `embeddings` (`Embeddings`)."""

    def __init__(self, model: nn.Module, scale: float, offset: float, num_classes: int = 0,
                 has_null_class: bool = False, embeddings: Embeddings | None = None):
        super().__init__()
        self.model, self.scale, self.offset, self.num_classes = model, scale, offset, num_classes
        self.has_null_class = has_null_class
        self.embeddings = embeddings
        if embeddings is not None:  # buffers: they move with the net and are saved with its weights
            self.register_buffer("prompt_embeds", embeddings.prompt.float().clone())
            self.register_buffer("pooled_embeds", embeddings.pooled.float().clone())

    def load_pretrained(self, folder: str | Path) -> None:
        """Take the weights of the diffusers model in `folder` (of this architecture)."""
        self.model.load_state_dict(pretrained(folder).state_dict())

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        k = t.double() * self.scale - self.offset  # [B] the scheduler's timesteps
        if self.num_classes and y is not None and not self.has_null_class and bool((y >= self.num_classes).any()):
            raise ArgumentError("guidance", "this diffusers model's class embedding has no null class: sample it "
                                            "with guidance 1 (a UNet whose training dropped labels to its last class "
                                            "embedding loads with genkit.from_diffusers(folder, null_class=True))")
        if self.embeddings is not None:
            rows = y if self.num_classes and y is not None else torch.full((len(x),), len(self.prompt_embeds) - 1,
                                                                           device=x.device)
            out = self.model(hidden_states=x, timestep=k.to(x.dtype), encoder_hidden_states=self.prompt_embeds[rows].to(
                x.dtype), pooled_projections=self.pooled_embeds[rows].to(x.dtype)).sample  # [B, C, H, W]
        else:
            labels = {"class_labels": y} if self.num_classes else {}
            out = self.model(x, k.to(x.dtype), **labels).sample  # [B, C or 2C, H, W]
        return out[:, :x.shape[1]]


@dataclass
class ModelFacts:
    """What genkit reads off a diffusers model's config: its image geometry and classes."""

    class_name: str
    channels: int
    size: int | None
    num_classes: int
    has_null_class: bool


def model_facts(config: dict, where: str, built: bool = False, null_class: bool = False) -> ModelFacts:
    """`ModelFacts` of a diffusers config (`config.json`, or a `built` model's `config` with its class
    name), checked to be a class genkit calls: one of `CLASSES`, or, built, any model called as
    UNet2DModel is (`model(sample, timestep, class_labels=None).sample`). `null_class`: the UNet's
    last class embedding is its null class, not a class."""
    name = config.get("_class_name")
    if name not in CLASSES and not built:
        raise ConfigError(f"model.diffusers.path: {where} holds a {name}; genkit calls {', '.join(CLASSES)} as a "
                          f"denoiser")
    size = config.get("sample_size")
    if null_class and name in ("DiTTransformer2DModel", *EMBEDDED):
        raise ConfigError(f"model.diffusers.null_class: a {name} has its null class already (set it for a UNet2DModel)")
    if name == "DiTTransformer2DModel":
        classes = int(config.get("num_embeds_ada_norm") or 0)
        if not classes:
            raise ConfigError(f"model.diffusers.path: {where} is a DiT without classes (num_embeds_ada_norm)")
        return ModelFacts(name, int(config.get("in_channels", 4)), size, classes, True)
    embeds = int(config.get("num_class_embeds") or 0)
    if null_class and embeds < 2:
        raise ConfigError(f"model.diffusers.null_class: {where} has {embeds} class embeddings; a null class is the "
                          f"last of at least two")
    return ModelFacts(name, int(config.get("in_channels", 3)), size, embeds - 1 if null_class else embeds, null_class)


def read_model_config(folder: str | Path) -> dict:
    """The diffusers `config.json` of the model in `folder`, checked to be a class genkit calls."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ConfigError(f"model.diffusers.path: {folder} holds no diffusers model (config.json)")
    config = json.loads(path.read_text())
    model_facts(config, str(folder))
    return config


def model_config(model: nn.Module) -> dict:
    """A built diffusers model's `config.json`, as plain data."""
    return json.loads(model.to_json_string())


def from_module(cfg, model: nn.Module, embeddings: Embeddings | None = None) -> DiffusersDenoiser:
    """A built diffusers `model` as the denoiser `cfg` describes (its path's time convention), with
    its `embeddings` where it takes them (an SD3 transformer): those given, else the config's file,
    else placeholders of the config's `embeddings_shape` (a checkpoint's weights hold them)."""
    dc = cfg.model.diffusers
    facts = model_facts(model_config(model), "the model given", built=True, null_class=dc.null_class)
    if embeddings is not None and facts.class_name not in EMBEDDED:
        raise ArgumentError("embeddings", f"a {facts.class_name} takes no embeddings")
    if embeddings is None and facts.class_name in EMBEDDED:
        if dc.embeddings and Path(dc.embeddings).is_file():
            embeddings = Embeddings.read(dc.embeddings)
        elif dc.embeddings_shape:
            embeddings = Embeddings.zeros(dc.embeddings_shape)
        else:
            raise ArgumentError("embeddings", f"a {facts.class_name} is conditioned on text-encoder outputs: pass them, "
                                              f"genkit.from_diffusers(..., embeddings=(prompt, pooled)), or name a "
                                              f"file of them in model.diffusers.embeddings")
    if cfg.method.name == "flow":
        scale, offset = cfg.model.diffusers.flow_timesteps, 0.0
    else:
        scale, offset = cfg.method.ddpm.num_timesteps, 1.0
    null = facts.has_null_class or embeddings is not None
    return DiffusersDenoiser(model, scale, offset, cfg.model.num_classes, null, embeddings)


def model_class(config: dict) -> type:
    """The class a diffusers `config.json` names: diffusers' own, or, for a model built in Python
    (`genkit.from_diffusers(pipeline)`), the class of that name the diffusers package has, if any."""
    import diffusers  # here, not at the top: importing it takes seconds, and most runs never call it

    found = getattr(diffusers, config.get("_class_name", ""), None)
    if not isinstance(found, type):
        raise ConfigError(f"model.diffusers.config: the diffusers package has no model class "
                          f"{config.get('_class_name')!r} to rebuild this net from")
    return found


def pretrained(folder: str | Path) -> nn.Module:
    """The diffusers model in `folder`, with its weights."""
    model = model_class(read_model_config(folder)).from_pretrained(folder)
    for tensor in [*model.parameters(), *model.buffers()]:  # memory of torch's own (see GenkitNet.from_pretrained)
        tensor.data = tensor.data.clone()
    return model


def build(cfg) -> DiffusersDenoiser:
    """The denoiser with the folder's weights where `model.diffusers.path` is a folder (a model to
    sample or fine-tune), else built from `model.diffusers.config` (the weights of a checkpoint or an
    export are loaded into it next)."""
    folder, config = cfg.model.diffusers.path, cfg.model.diffusers.config
    if folder and Path(folder).is_dir():
        model = pretrained(folder)
    elif config:
        model = model_class(config).from_config(config)
    else:
        raise ConfigError("model.diffusers.path: name the diffusers model's folder (a model built in Python is "
                          "handed to genkit.from_diffusers instead)")
    return from_module(cfg, model)


def check(cfg) -> None:
    if cfg.method.name not in ("ddpm", "flow"):
        raise ConfigError(f"method.name: a diffusers model runs on DDPM's path or a rectified flow, not "
                          f"{cfg.method.name}")
    dc = cfg.model.diffusers
    if dc.path and not dc.config:  # the checkpoints this config writes will not need the folder
        dc.config = read_model_config(dc.path)
    if not dc.config:  # a model built in Python: `genkit.from_diffusers` read its config
        return
    facts = model_facts(dc.config, dc.path or "model.diffusers.config", built=True, null_class=dc.null_class)
    if dc.embeddings and not dc.embeddings_shape:  # checkpoints keep the embeddings: they will not need the file
        dc.embeddings_shape = Embeddings.read(dc.embeddings).shape
    if facts.class_name in EMBEDDED and dc.embeddings_shape:
        rows = dc.embeddings_shape[0]
        if rows != cfg.model.num_classes + 1 and not (rows == 1 and cfg.model.num_classes == 0):
            raise ConfigError(f"model.num_classes: {cfg.model.num_classes}, but model.diffusers.embeddings holds "
                              f"{rows} rows (one per class, then the null class; or one for an unconditional model)")
    data, latent = cfg.data, bool(cfg.data.autoencoder)  # a latent model's net takes the latents
    channels, given = (data.latent_channels, data.latent_size) if latent else (data.channels, data.image_size)
    size = facts.size if isinstance(facts.size, int) else given
    known = channels or not latent  # latents are filled in from the autoencoder as training starts, then checked
    if known and (channels, given) != (facts.channels, size):
        keys = "data.latent_channels, data.latent_size" if latent else "data.channels, data.image_size"
        raise ConfigError(f"{keys}: the diffusers model takes {facts.channels} x {facts.size} "
                          f"{'latents' if latent else 'images'}, not {channels} x {given}")
    if facts.class_name not in EMBEDDED and facts.num_classes != cfg.model.num_classes:
        spare = facts.num_classes == cfg.model.num_classes + 1 and not facts.has_null_class
        raise ConfigError(f"model.num_classes: the diffusers model has {facts.num_classes} classes, not "
                          f"{cfg.model.num_classes}" + (" (or, where its last class embedding is the null class its "
                                                        "training dropped labels to, model.diffusers.null_class=true)"
                                                        if spare else ""))
    if facts.num_classes and not facts.has_null_class and cfg.method.p_uncond > 0:
        raise ConfigError(f"method.p_uncond: the diffusers {facts.class_name}'s class embedding has no null class to "
                          f"drop labels to; train it with method.p_uncond=0 (or, where its last class embedding is "
                          f"one, with model.diffusers.null_class=true)")
