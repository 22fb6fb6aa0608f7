"""Typed run configuration: dataclasses loaded from YAML with dotted `key=value` overrides.

Every field has a default, so an empty YAML file is a valid config. Any mistake (an unknown
key, a wrong type, a value out of range) raises `ConfigError` with one line naming the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A user mistake in a config file, an override or a command-line flag."""


@dataclass
class UNetConfig:
    """ADM-style UNet (Dhariwal & Nichol 2021); see `genkit.nets.unet`."""

    channels: int = 64  # width of the first level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # width multiplier per resolution level
    num_res_blocks: tuple[int, ...] = (2,)  # residual blocks on the way down: one count, or one per level
    attention_resolutions: tuple[int, ...] = (8,)  # feature-map sizes that get self-attention
    head_channels: int = 32  # channels per attention head
    dropout: float = 0.0

    def blocks_per_level(self) -> tuple[int, ...]:
        """`num_res_blocks` as one count per level (a single count, or a bare int, is repeated)."""
        counts = (self.num_res_blocks,) if isinstance(self.num_res_blocks, int) else tuple(self.num_res_blocks)
        return counts * len(self.channel_mult) if len(counts) == 1 else counts


@dataclass
class DiTConfig:
    """Diffusion Transformer (Peebles & Xie 2023); see `genkit.nets.dit`."""

    patch_size: int = 2
    hidden_size: int = 256
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0


@dataclass
class PixelCNNConfig:
    """Gated PixelCNN without blind spot (van den Oord et al. 2016b); see `genkit.nets.pixelcnn`."""

    channels: int = 64  # width of the vertical and horizontal stacks
    num_layers: int = 8  # gated blocks after the input layer
    kernel_size: int = 3  # of the gated blocks (odd)
    input_kernel_size: int = 7  # of the input layer (odd)
    head_channels: int = 256  # hidden width of the output head


@dataclass
class MADEConfig:
    """MADE (Germain et al. 2015); `model.name: fvsbn` is the same net with no hidden layer."""

    hidden: tuple[int, ...] = (500,)  # hidden layer widths


@dataclass
class ModelConfig:
    name: str = "unet"  # unet | dit (denoisers); pixelcnn | made | fvsbn (autoregressive)
    num_classes: int = 10  # 0 for an unconditional model; class id `num_classes` is the null class
    unet: UNetConfig = field(default_factory=UNetConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    pixelcnn: PixelCNNConfig = field(default_factory=PixelCNNConfig)
    made: MADEConfig = field(default_factory=MADEConfig)


@dataclass
class DataConfig:
    path: str = "data/mnist"  # local parquet/imagefolder directory or a hub id
    split: str = "train"
    image_column: str = "image"
    label_column: str = "label"  # "" for an unlabelled data set
    image_size: int = 32
    channels: int = 1
    fit: str = "pad"  # pad (centre, with black) | resize (shorter side, then centre crop)
    hflip: bool = False


@dataclass
class SDEConfig:
    """Score-SDE processes (Song et al. 2021); see `genkit.paths.sde` and `genkit.methods.sde`."""

    kind: str = "vp"  # vp | subvp | ve
    beta_min: float = 0.1  # vp, subvp
    beta_max: float = 20.0
    sigma_min: float = 0.01  # ve
    sigma_max: float = 50.0
    t_eps: float = 1e-5  # training draws t ~ U(t_eps, 1)
    likelihood_weighting: bool = False  # weight the loss by g(t)^2 (Song et al. 2021b) instead of sigma^2


@dataclass
class FlowConfig:
    """Rectified flow with SD3's timestep densities (Esser et al. 2024); see `genkit.methods.flow`."""

    time_density: str = "logit_normal"  # uniform | logit_normal | mode | cosmap
    logit_mean: float = 0.0  # logit_normal(m, s)
    logit_std: float = 1.0
    mode_scale: float = 1.29  # mode(s)
    shift: float = 1.0  # t' = a t / (1 + (a - 1) t) in training and sampling
    density_as: str = "sample"  # sample: draw t from the density; weight: draw t uniformly, weight the loss


@dataclass
class AutoregressiveConfig:
    """Exact-likelihood training of an autoregressive net; see `genkit.methods.autoregressive`."""

    levels: int = 2  # 2: Bernoulli pixels, dynamically binarized; 256: a categorical over grey levels


@dataclass
class MethodConfig:
    name: str = "ddpm"  # ddpm | sde | flow | autoregressive
    num_timesteps: int = 1000
    beta_schedule: str = "linear"  # linear | scaled_linear | cosine | sigmoid
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction: str = "auto"  # auto (eps; velocity for flow) | eps | x0 | v | velocity
    zero_terminal_snr: bool = False  # rescale betas so that t = 1 is pure noise (Lin et al. 2024)
    loss_weighting: str = "plain"  # plain | min_snr | trunc_snr
    snr_gamma: float = 5.0  # gamma of min_snr
    p_uncond: float = 0.1  # probability of dropping the label (classifier-free guidance)
    sde: SDEConfig = field(default_factory=SDEConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    autoregressive: AutoregressiveConfig = field(default_factory=AutoregressiveConfig)

    @property
    def resolved_prediction(self) -> str:
        """The prediction kind, with `auto` made concrete for the method."""
        if self.prediction != "auto":
            return self.prediction
        return "velocity" if self.name == "flow" else "eps"


@dataclass
class SampleConfig:
    sampler: str = "dpmpp_2m_pc"  # genkit.samplers.default_sampler; cached | naive for autoregressive models
    steps: int = 50
    guidance: float = 1.0  # classifier-free guidance weight; 1 = plain conditional model
    num: int = 64


@dataclass
class TrainConfig:
    max_steps: int = 3000
    max_minutes: float = 0.0  # also stop (with a checkpoint) after this much wall time; 0 = no limit
    batch_size: int = 128  # global batch, split over processes and accumulation steps
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 200
    grad_clip: float = 1.0  # 0 disables clipping
    mixed_precision: str = "bf16"  # no | bf16
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 20
    sample_every: int = 1000  # 0 disables periodic sample grids
    checkpoint_every: int = 1000  # 0 saves only at the end
    checkpoints_keep: int = 3
    max_bad_steps: int = 20  # stop after this many consecutive non-finite steps
    cpu_threads: int = 0  # torch threads per process on CPU; 0 = cores / local processes
    compile: bool = False  # torch.compile the net (minutes of compilation before the first step)
    resume: str = ""  # "", a checkpoint directory, or "latest"
    init_from: str = ""  # start from these weights (a run or checkpoint directory), e.g. a 1-rectified flow


@dataclass
class Config:
    output_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


CHOICES = {
    "model.name": ("unet", "dit", "pixelcnn", "made", "fvsbn"),
    "data.fit": ("pad", "resize"),
    "method.name": ("ddpm", "sde", "flow", "autoregressive"),
    "method.autoregressive.levels": (2, 256),
    "method.beta_schedule": ("linear", "scaled_linear", "cosine", "sigmoid"),
    "method.prediction": ("auto", "eps", "x0", "v", "velocity"),
    "method.sde.kind": ("vp", "subvp", "ve"),
    "method.flow.time_density": ("uniform", "logit_normal", "mode", "cosmap"),
    "method.flow.density_as": ("sample", "weight"),
    "method.loss_weighting": ("plain", "min_snr", "trunc_snr"),
    "train.mixed_precision": ("no", "bf16"),
}


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Build a `Config` from an optional YAML file and `key=value` overrides, then validate it."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}")
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        _set_dotted(raw, key.strip(), _parse_scalar(text))
    cfg = from_dict(Config, raw)
    validate(cfg)
    return cfg


def from_dict(cls, raw: dict, prefix: str = ""):
    """Recursively build dataclass `cls` from a plain dict, checking keys and types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(_unknown_key(prefix + str(key), [prefix + n for n in _all_keys(cls)]))
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = from_dict(kind, value, prefix + key + ".")
        else:
            kwargs[key] = _coerce(value, kind, prefix + key)
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    """The config as plain YAML-safe data (tuples become lists)."""
    return yaml.safe_load(yaml.safe_dump(_plain(dataclasses.asdict(cfg))))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def validate(cfg: Config) -> None:
    """Check value ranges and cross-field constraints; raise `ConfigError` on the first problem."""
    for key, allowed in CHOICES.items():
        value = _get_dotted(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}")
    positive = [
        "train.max_steps", "train.batch_size", "train.grad_accum", "train.lr", "train.log_every",
        "train.max_bad_steps", "data.image_size", "data.channels", "method.num_timesteps",
        "sample.steps", "sample.num", "method.snr_gamma", "model.unet.channels",
        "model.unet.head_channels", "model.dit.patch_size", "model.dit.hidden_size",
        "model.dit.depth", "model.dit.num_heads", "model.dit.mlp_ratio", "method.flow.logit_std",
        "method.flow.shift", "model.pixelcnn.channels", "model.pixelcnn.num_layers",
        "model.pixelcnn.head_channels",
    ]
    for key in positive:
        if not _get_dotted(cfg, key) > 0:
            raise ConfigError(f"{key}: must be positive, got {_get_dotted(cfg, key)}")
    non_negative = [
        "train.weight_decay", "train.warmup_steps", "train.grad_clip", "train.sample_every",
        "train.checkpoint_every", "train.checkpoints_keep", "train.cpu_threads", "model.num_classes",
        "train.max_minutes",
        "model.unet.dropout",
    ]
    for key in non_negative:
        if _get_dotted(cfg, key) < 0:
            raise ConfigError(f"{key}: must not be negative, got {_get_dotted(cfg, key)}")
    for key in ["train.ema_decay", "method.p_uncond", "model.unet.dropout"]:
        if not 0 <= _get_dotted(cfg, key) < 1:
            raise ConfigError(f"{key}: must lie in [0, 1), got {_get_dotted(cfg, key)}")
    if not 0 < cfg.method.beta_start < cfg.method.beta_end < 1:
        raise ConfigError("method.beta_start, method.beta_end: need 0 < beta_start < beta_end < 1")
    m = cfg.method
    if m.zero_terminal_snr and m.resolved_prediction == "eps":
        raise ConfigError("method.prediction: eps cannot be inverted at zero terminal SNR; use v or x0")
    if m.name == "flow" and m.resolved_prediction == "eps":
        raise ConfigError("method.prediction: eps cannot be inverted at t = 1 of a flow; use velocity, x0 or v")
    if m.name != "ddpm" and m.loss_weighting != "plain":
        raise ConfigError(f"method.loss_weighting: {m.loss_weighting} is for ddpm; sde has method.sde.likelihood_weighting, "
                          "flow method.flow.density_as=weight")
    if not 0 < m.sde.beta_min < m.sde.beta_max:
        raise ConfigError("method.sde.beta_min, method.sde.beta_max: need 0 < beta_min < beta_max")
    if not 0 < m.sde.sigma_min < m.sde.sigma_max:
        raise ConfigError("method.sde.sigma_min, method.sde.sigma_max: need 0 < sigma_min < sigma_max")
    if not 0 < m.sde.t_eps < 0.1:
        raise ConfigError(f"method.sde.t_eps: must lie in (0, 0.1), got {m.sde.t_eps}")
    if not -1 < m.flow.mode_scale < 2 / (math.pi - 2):
        raise ConfigError(f"method.flow.mode_scale: must lie in (-1, {2 / (math.pi - 2):.3f}) for a monotone map, "
                          f"got {m.flow.mode_scale}")
    if cfg.sample.guidance < 0:
        raise ConfigError(f"sample.guidance: must not be negative, got {cfg.sample.guidance}")
    _validate_autoregressive(cfg)
    unet, dit, size = cfg.model.unet, cfg.model.dit, cfg.data.image_size
    if not unet.channel_mult or min(unet.channel_mult) <= 0:
        raise ConfigError(f"model.unet.channel_mult: needs positive entries, got {list(unet.channel_mult)}")
    blocks = unet.blocks_per_level()
    if not blocks or min(blocks) <= 0:
        raise ConfigError(f"model.unet.num_res_blocks: needs positive entries, got {list(blocks)}")
    if len(blocks) != len(unet.channel_mult):
        raise ConfigError(f"model.unet.num_res_blocks: give one count or one per level of model.unet.channel_mult "
                          f"({len(unet.channel_mult)}), got {list(blocks)}")
    if cfg.model.name == "unet":
        levels = len(unet.channel_mult) - 1
        if size % 2**levels:
            raise ConfigError(
                f"data.image_size: {size} is not divisible by 2**{levels} "
                f"(model.unet.channel_mult has {levels + 1} levels)")
        for mult in unet.channel_mult:
            if (unet.channels * mult) % unet.head_channels or (unet.channels * mult) % 32:
                raise ConfigError(
                    f"model.unet.channels: {unet.channels} x {mult} must be a multiple of 32 "
                    f"(GroupNorm) and of model.unet.head_channels ({unet.head_channels})")
    if cfg.model.name == "dit":
        if size % dit.patch_size:
            raise ConfigError(f"model.dit.patch_size: {dit.patch_size} does not divide data.image_size {size}")
        if dit.hidden_size % dit.num_heads:
            raise ConfigError(
                f"model.dit.num_heads: {dit.num_heads} does not divide model.dit.hidden_size {dit.hidden_size}")
        if (dit.hidden_size // dit.num_heads) % 2 or dit.hidden_size % 4:
            raise ConfigError("model.dit.hidden_size: needs hidden_size % 4 == 0 and an even head width")


AUTOREGRESSIVE_NETS = ("pixelcnn", "made", "fvsbn")
AUTOREGRESSIVE_SAMPLERS = ("cached", "naive")


def _validate_autoregressive(cfg: Config) -> None:
    """Autoregressive nets go with the autoregressive method, one channel, and their samplers."""
    ar_net, ar_method = cfg.model.name in AUTOREGRESSIVE_NETS, cfg.method.name == "autoregressive"
    if ar_net != ar_method:
        raise ConfigError(f"method.name: {cfg.method.name} does not train model.name={cfg.model.name} "
                          f"(autoregressive goes with {', '.join(AUTOREGRESSIVE_NETS)}, and only with them)")
    if not ar_method:
        return
    if cfg.data.channels != 1:
        raise ConfigError(f"data.channels: autoregressive models take one channel, got {cfg.data.channels}")
    if cfg.model.name != "pixelcnn" and cfg.method.autoregressive.levels != 2:
        raise ConfigError(f"method.autoregressive.levels: {cfg.model.name} models binary pixels (levels=2)")
    if cfg.model.name == "pixelcnn":
        p = cfg.model.pixelcnn
        for key, k in [("kernel_size", p.kernel_size), ("input_kernel_size", p.input_kernel_size)]:
            if k < 1 or k % 2 == 0:
                raise ConfigError(f"model.pixelcnn.{key}: must be a positive odd number, got {k}")
    if cfg.model.name == "made" and (not cfg.model.made.hidden or min(cfg.model.made.hidden) <= 0):
        raise ConfigError(f"model.made.hidden: needs positive widths, got {list(cfg.model.made.hidden)}")
    if cfg.sample.sampler not in AUTOREGRESSIVE_SAMPLERS:
        raise ConfigError(f"sample.sampler: autoregressive models sample with "
                          f"{' or '.join(AUTOREGRESSIVE_SAMPLERS)}, got {cfg.sample.sampler!r}")
    if cfg.sample.sampler == "cached" and cfg.model.name != "pixelcnn":
        raise ConfigError(f"sample.sampler: cached sampling is for pixelcnn; {cfg.model.name} samples naive")


# ---------------------------------------------------------------------------- helpers


def _all_keys(cls, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        kind = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(kind):
            keys += _all_keys(kind, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def all_keys() -> list[str]:
    """Every dotted key a config accepts."""
    return _all_keys(Config)


def _unknown_key(key: str, candidates: list[str]) -> str:
    pool = candidates or all_keys()
    close = difflib.get_close_matches(key, pool, n=1, cutoff=0.5)
    if not close:  # compare the last component too: `train.max_step` vs `max_steps`
        tails = {c.rsplit(".", 1)[-1]: c for c in all_keys()}
        hit = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(tails), n=1, cutoff=0.6)
        close = [tails[hit[0]]] if hit else []
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown config key {key!r}{hint}"


def _parse_scalar(text: str):
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _set_dotted(raw: dict, key: str, value) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def _get_dotted(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _coerce(value, kind, key: str):
    """Return `value` as type `kind` or raise a one-line `ConfigError`."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        kind = next(k for k in options if k is not type(None))
        origin = typing.get_origin(kind)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(v, item, key) for v in value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if kind is str:
        if value is None:
            return ""
        if isinstance(value, bool):  # YAML 1.1 reads no/yes as booleans: mixed_precision: no
            return "yes" if value else "no"
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {kind}")  # a bug in this module, not the user's


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
