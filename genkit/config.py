"""Typed run configuration: dataclasses loaded from YAML with dotted `key=value` overrides.

Every field has a default, so an empty YAML file is a valid config. Any mistake (an unknown
key, a wrong type, a value out of range) raises `ConfigError` with one line naming the key.

The `model` and `method` sections are assembled from the registries: each net and method brings
its own config class (`model.<name>`, `method.<name>`) and its own checks (`genkit.registry`);
this module owns only the run's layout (data, train, sample) and the loading machinery.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from genkit.arguments import check_draw, check_guidance_interval, shorten
from genkit.assets import find_recipe, recipe_names
from genkit.methods import METHODS
from genkit.nets import NETS
from genkit.registry import ArgumentError, ConfigError, one_of, require
from genkit.samplers import DEFAULT_SAMPLER, SAMPLERS, check_options


@dataclass
class DataConfig:
    path: str = "data/mnist"  # local parquet/imagefolder directory or a hub id
    split: str = "train"
    image_column: str = "image"
    label_column: str = "label"  # "" for an unlabelled data set
    image_size: int = 32
    channels: int = 1
    fit: str = "pad"  # pad (centre, with black) | resize (shorter side, then centre crop) | random_crop (training
    # draws a random square of 80-100% of the image, as ADM; evaluation sees the centre crop)
    hflip: bool = False
    loader: str = "auto"  # memory (decode the split once) | disk (decode each batch) | auto: memory up to memory_mb
    memory_mb: int = 4096  # the largest decoded split `auto` holds in memory
    workers: int = 2  # processes that decode batches ahead of training, for a split on disk
    autoencoder: str = ""  # a trained autoencoder (run, checkpoint): the model learns its latents, as SD3; "" = pixels
    latent_channels: int = 0  # of the autoencoder's latents; 0: read off the autoencoder when training starts
    latent_size: int = 0


def _sections(name: str, registry, common: list, doc: str, **namespace) -> type:
    """A dataclass with the `common` fields, then one section per registered component that has a config."""
    fields = list(common) + [(key, c.config, field(default_factory=c.config)) for key, c in registry.items()
                             if c.config is not None]
    return dataclasses.make_dataclass(name, fields, namespace={"__doc__": doc, "__module__": __name__, **namespace})


def _resolved_prediction(self) -> str:
    """The prediction kind, with `auto` made concrete for the method (eps; velocity for flow)."""
    if self.prediction != "auto":
        return self.prediction
    return METHODS[self.name].extra.get("prediction", "eps") if self.name in METHODS else "eps"


def assemble() -> None:
    """(Re)build `ModelConfig` and `MethodConfig` from the registries. Runs at import, and again
    in `load_config` after a component is registered later (a user's own net or method)."""
    global ModelConfig, MethodConfig, _assembled_from
    ModelConfig = _sections("ModelConfig", NETS, [
        ("name", str, "unet"),  # a `genkit.nets.NETS` name: unet | dit (denoisers); pixelcnn | made | fvsbn
        ("num_classes", int, 10),  # 0 for an unconditional model; class id `num_classes` is the null class
        ("interval", bool, False),  # also embed a second time r, as t - r (MeanFlow's average velocity)
    ], "`model`: which net (`name`), the number of classes, and one section per net in `genkit.nets.NETS`.")
    MethodConfig = _sections("MethodConfig", METHODS, [
        ("name", str, "ddpm"),  # a `genkit.methods.METHODS` name: ddpm | sde | flow | autoregressive
        ("prediction", str, "auto"),  # auto | eps | x0 | v | velocity
        ("p_uncond", float, 0.1),  # probability of dropping the label (classifier-free guidance)
    ], "`method`: which training method (`name`), what the net predicts, label dropout, and one section per "
       "method in `genkit.methods.METHODS`.", resolved_prediction=property(_resolved_prediction))
    _assembled_from = _registered()


def _registered() -> tuple:
    return tuple((name, c.config) for registry in (NETS, METHODS) for name, c in registry.items())


assemble()


@dataclass
class SampleConfig:
    """`sample`: how the run's grids (and `genkit sample` by default) are drawn."""

    sampler: str = DEFAULT_SAMPLER  # a `genkit.samplers.SAMPLERS` name; cached | naive for autoregressive models
    steps: int = 50
    guidance: float = 1.0  # classifier-free guidance weight; 1 = plain conditional model
    # where guidance applies: [lo, hi] bounds on the noise-to-signal ratio sigma/alpha (EDM's sigma), [lo] from lo
    # up, [] at every level (Kynkäänniemi et al. 2024; their ImageNet interval is [0.28, 2.9])
    guidance_interval: tuple[float, ...] = ()
    num: int = 64
    options: dict = field(default_factory=dict)  # the sampler's keyword options, e.g. {eta: 0.5} for ddim
    fit_grid: bool = True  # once training ends, fit the sampler's grid (if it takes a fitted one) at these steps
    # and guidance, and store it with the final checkpoint (`genkit fit-grid` fits others later)


@dataclass
class TrainConfig:
    max_steps: int = 3000
    max_minutes: float = 0.0  # also stop (with a checkpoint) after this much wall time; 0 = no limit
    batch_size: int = 128  # global batch, split over processes and accumulation steps
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)  # AdamW's (beta1, beta2)
    warmup_steps: int = 200
    lr_schedule: str = "warmup_cosine"  # warmup_cosine (genkit's) or a diffusers.optimization schedule name
    grad_clip: float = 1.0  # 0 disables clipping
    mixed_precision: str = "auto"  # auto | no | fp16 | bf16 (auto: accelerate's choice, else what the hardware has)
    report_to: str = "tensorboard"  # an accelerate tracker (tensorboard, wandb, mlflow, comet_ml, ...), all, or none
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 20
    sample_every: int = 1000  # 0 disables periodic sample grids
    checkpoint_every: int = 1000  # 0 saves only at the end
    checkpoints_keep: int = 3
    max_bad_steps: int = 20  # stop after this many consecutive non-finite steps
    cpu_threads: int = 0  # torch threads per process on CPU; 0 = cores / local processes
    compile: bool = False  # torch.compile the net (minutes of compilation before the first step)
    fsdp: bool = False  # shard weights, gradients and optimizer state across the processes (FSDP2)
    resume: str = ""  # "", a checkpoint directory, or "latest"
    allow_config_changes: bool = False  # resume even where this config changes the checkpoint's trajectory
    overwrite: bool = False  # replace a run already in output_dir (its checkpoints, logs and samples)
    init_from: str = ""  # start from these weights (a run or checkpoint directory), e.g. a 1-rectified flow


@dataclass
class Config:
    output_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=lambda: ModelConfig())  # the class `assemble` built last
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=lambda: MethodConfig())
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


LR_SCHEDULES = ("warmup_cosine", "linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                "constant_with_warmup")  # genkit's warm-up + cosine to 0, then diffusers.optimization's
TRACKERS = ("none", "all", "tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive")
FITS = ("pad", "resize", "random_crop")  # data.fit

# Keys renamed since earlier versions (saved runs still load): old dotted key -> new one.
RENAMED = {f"method.{key}": f"method.ddpm.{key}" for key in
           ("num_timesteps", "beta_schedule", "beta_start", "beta_end", "zero_terminal_snr", "loss_weighting",
            "snr_gamma")}


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Build a `Config` from an optional YAML file (a path, or a bundled recipe's name) and
    `key=value` overrides, then validate it."""
    raw: dict = {}
    if path is not None:
        found = find_recipe(path)
        if found is None and Path(path).expanduser().is_dir():
            raise ConfigError(f"config file {path} is a directory; name a YAML file (a recipe) in it")
        if found is None:
            raise ConfigError(f"config file not found: {path} (genkit's recipes: {', '.join(recipe_names())})")
        path = found
        try:
            raw = read_yaml(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}")
        except (UnicodeDecodeError, OSError) as err:
            raise ConfigError(f"config file {path} cannot be read as text ({type(err).__name__})") from None
        except ConfigError as err:
            raise ConfigError(f"config file {path}: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = parse_scalar(text)
        except ConfigError as err:
            raise ConfigError(f"{key.strip()}: {err}") from None
        _set_dotted(raw, RENAMED.get(key.strip(), key.strip()), value)
    return config_from_dict(raw)


def config_from_dict(raw: dict) -> Config:
    """A validated `Config` from nested plain data, as `to_dict` writes it (older key names too)."""
    if _registered() != _assembled_from:
        assemble()
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping of keys to values, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    _rename_legacy(raw)
    cfg = from_dict(Config, raw)
    validate(cfg)
    return cfg


def from_dict(cls, raw: dict, prefix: str = ""):
    """Recursively build dataclass `cls` from a plain dict, checking keys and types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {shorten(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(_unknown_key(prefix + str(key), [prefix + n for n in _key_types(cls)]))
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = from_dict(kind, value, prefix + key + ".")
        else:
            kwargs[key] = _coerce(value, kind, prefix + key)
    return cls(**kwargs)


def to_dict(cfg, active_only: bool = True) -> dict:
    """The config as plain YAML-safe data (tuples become lists); by default without the sections
    of the nets and methods the run does not use."""
    data = yaml.safe_load(yaml.safe_dump(_plain(dataclasses.asdict(cfg)), sort_keys=False))
    if active_only and isinstance(cfg, Config):
        for part, registry in (("model", NETS), ("method", METHODS)):
            used = getattr(cfg, part).name
            for name in registry:
                if name != used:
                    data[part].pop(name, None)
    return data


def flat_dict(cfg) -> dict:
    """The config as {dotted key: value} (an empty mapping, like sample.options, is one value)."""
    def walk(data: dict, prefix: str) -> dict:
        out = {}
        for key, value in data.items():
            out.update(walk(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {prefix + key: value})
        return out
    return walk(to_dict(cfg), "")


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def validate(cfg: Config) -> None:
    """Check the run's own sections, then let the chosen net, method and sampler check theirs;
    raise `ConfigError` on the first problem."""
    one_of(cfg.data.fit, FITS, "data.fit")
    one_of(cfg.train.mixed_precision, ("auto", "no", "fp16", "bf16"), "train.mixed_precision")
    one_of(cfg.train.lr_schedule, LR_SCHEDULES, "train.lr_schedule")
    one_of(cfg.train.report_to, TRACKERS, "train.report_to")
    one_of(cfg.method.prediction, ("auto", "eps", "x0", "v", "velocity"), "method.prediction")
    require(cfg.train, "train", positive=["max_steps", "batch_size", "grad_accum", "lr", "log_every", "max_bad_steps"],
            non_negative=["weight_decay", "warmup_steps", "grad_clip", "sample_every", "checkpoint_every",
                          "checkpoints_keep", "cpu_threads", "max_minutes"], unit=["ema_decay"])
    if cfg.train.fsdp and (cfg.train.compile or cfg.train.mixed_precision == "fp16"):
        raise ConfigError("train.fsdp: sharded training runs without train.compile and in bf16 or fp32 (fp16's loss "
                          "scaling is not sharded here); set train.compile=false, train.mixed_precision=bf16 or no")
    betas = cfg.train.adam_betas
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"train.adam_betas: give two numbers in [0, 1), e.g. [0.9, 0.999]; got {list(betas)}")
    if not 0 <= cfg.train.seed < 2**32:  # accelerate seeds numpy too, whose seeds are 32-bit
        raise ConfigError(f"train.seed: must lie in 0..2**32-1, got {cfg.train.seed}")
    require(cfg.data, "data", positive=["image_size"])
    one_of(cfg.data.channels, (1, 3), "data.channels")  # grey or RGB images
    if cfg.data.image_size > 4096:
        raise ConfigError(f"data.image_size: at most 4096, got {cfg.data.image_size}")
    require(cfg.data, "data", non_negative=["latent_channels", "latent_size", "memory_mb", "workers"])
    one_of(cfg.data.loader, ("auto", "memory", "disk"), "data.loader")
    if not cfg.data.autoencoder and (cfg.data.latent_channels or cfg.data.latent_size):
        raise ConfigError("data.latent_channels: latents need an autoencoder; set data.autoencoder (or leave both at 0)")
    sc = cfg.sample
    try:  # the check every draw makes (`genkit.arguments`), on the draws the run's grids make
        check_draw(sc.num, 0, 1, sc.steps, sc.guidance)
        check_guidance_interval(sc.guidance_interval)
    except ArgumentError as err:
        key = "num" if err.argument == "n" else err.argument
        raise ConfigError(f"sample.{key}: {err.problem}") from None
    require(cfg.model, "model", non_negative=["num_classes"])
    require(cfg.method, "method", unit=["p_uncond"])
    net = NETS.lookup(cfg.model.name, "model.name")
    method = METHODS.lookup(cfg.method.name, "method.name")
    if net.family != method.family:
        article = "an" if net.family[0] in "aeiou" else "a"
        raise ConfigError(f"method.name: {cfg.method.name} does not train model.name={cfg.model.name} ({article} "
                          f"{net.family} net; those are {', '.join(METHODS.names(net.family))})")
    if cfg.model.interval and not net.extra.get("interval"):
        raise ConfigError(f"model.interval: {cfg.model.name} takes one time; the nets that take a second are "
                          f"{', '.join(n for n, c in NETS.items() if c.extra.get('interval'))}")
    if cfg.data.autoencoder and method.family != "denoiser":
        raise ConfigError(f"data.autoencoder: latents are learnt by the Gaussian-path methods "
                          f"({', '.join(METHODS.names('denoiser'))}), not method.name={cfg.method.name}")
    if cfg.data.autoencoder and cfg.data.hflip:
        raise ConfigError("data.hflip: latents are encoded once, unflipped; set data.hflip=false with data.autoencoder")
    if cfg.data.autoencoder and cfg.data.fit == "random_crop":
        raise ConfigError("data.fit: latents are encoded once, uncropped; use pad or resize with data.autoencoder")
    sampler = SAMPLERS.lookup(cfg.sample.sampler, "sample.sampler", method.family)
    for component in (net, method, sampler):
        if component.check is not None:
            component.check(cfg)
    if not sampler.extra.get("contenders"):
        try:
            check_options(sampler.build, cfg.sample.options, sampler.name)
        except ArgumentError as err:
            raise ConfigError(f"sample.options.{err.argument}: {err.problem}") from None


# ---------------------------------------------------------------------------- helpers


def _key_types(cls, prefix: str = "") -> dict[str, type]:
    keys = {}
    for f in dataclasses.fields(cls):
        kind = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(kind):
            keys.update(_key_types(kind, prefix + f.name + "."))
        else:
            keys[prefix + f.name] = kind
    return keys


def key_types() -> dict[str, type]:
    """Every dotted key a config accepts -> the type its value takes."""
    return _key_types(Config)


def all_keys() -> list[str]:
    """Every dotted key a config accepts."""
    return list(key_types())


def _unknown_key(key: str, candidates: list[str]) -> str:
    pool = candidates or all_keys()
    close = difflib.get_close_matches(key, pool, n=1, cutoff=0.5)
    if not close:  # compare the last component too: `train.max_step` vs `max_steps`
        tails = {c.rsplit(".", 1)[-1]: c for c in all_keys()}
        hit = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(tails), n=1, cutoff=0.6)
        close = [tails[hit[0]]] if hit else []
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown config key {shorten(key)}{hint}"


def parse_scalar(text: str):
    """An override's or option's value as YAML reads it (1, 0.5, true, [1, 2], ...); text that is
    not YAML stays text, for the checks of the key it is given to."""
    try:
        return read_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


MAX_YAML_DEPTH, MAX_YAML_VALUES = 32, 100_000  # a config is 4 levels deep and holds about 150 values


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing what a config never needs: a key given twice in one mapping
    (YAML would keep the last silently), nesting beyond `MAX_YAML_DEPTH`, and aliases that expand
    to more than `MAX_YAML_VALUES` values (an alias bomb)."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise ConfigError(f"nested more than {MAX_YAML_DEPTH} levels deep (line {self._line()})")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
            if key in seen:
                raise ConfigError(f"key {shorten(key)} is given twice in one mapping (line "
                                  f"{key_node.start_mark.line + 1}); keep one")
            seen.add(key)
        return super().construct_mapping(node, deep)

    def _line(self) -> int:
        return self.peek_event().start_mark.line + 1


def _expanded_size(node, sizes: dict) -> int:
    """How many values `node` stands for once every alias is expanded (each shared node counted
    once per use, computed once)."""
    if id(node) not in sizes:
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def read_yaml(text: str):
    """Plain data from YAML text through `_ConfigLoader`; `ConfigError` (without a key: the
    caller says where) for what it refuses, `yaml.YAMLError` for what is not YAML."""
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_VALUES:
            raise ConfigError(f"its aliases expand to {size:.3g} values, more than the {MAX_YAML_VALUES} a config "
                              f"may hold")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _rename_legacy(raw: dict) -> None:
    """Move keys of earlier versions (`RENAMED`) to their new place, in place."""
    for old, new in RENAMED.items():
        section, name = old.rsplit(".", 1)
        node = raw.get(section) if isinstance(raw.get(section), dict) else None
        if node is not None and name in node:
            _set_dotted(raw, new, node.pop(name))


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
            raise ConfigError(f"{key}: expected a list, got {shorten(value)}")
        return tuple(_coerce(v, item, key) for v in value)
    if kind is dict:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key}: expected a mapping of names to values, got {shorten(value)}")
        return dict(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {shorten(value)}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {shorten(value)}")
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {shorten(value)}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                raise ConfigError(f"{key}: expected a finite number, got {shorten(value)}")
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {shorten(value)}")
    if kind is str:
        if value is None:
            return ""
        if isinstance(value, bool):  # YAML 1.1 reads no/yes as booleans: mixed_precision: no
            return "yes" if value else "no"
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {shorten(value)}")
    raise ConfigError(f"{key}: unsupported type {kind}")  # a bug in this module, not the user's


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
