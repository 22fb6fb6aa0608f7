"""`genkit.load`: a run, a checkpoint, an export, a diffusers pipeline folder or a Hub repository, as a
model ready to sample; `genkit.from_diffusers`: a diffusers pipeline (folder or object) as a genkit model."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from genkit.checkpoint import AUTOENCODER_DIR, load_export, read_grids, read_trainer_state
from genkit.config import config_from_dict
from genkit.export.hub import is_pretrained, load_pretrained, resolve
from genkit.inference import GenerativeModel, TrainedModel, build_model
from genkit.latents import DiffusersAutoencoder, LatentCodec
from genkit.nets.diffusers_net import Embeddings, from_module, model_config, model_facts, pretrained, read_model_config
from genkit.registry import ArgumentError

DIFFUSERS_DENOISERS = ("unet", "transformer")  # a pipeline folder's denoiser, by its subfolder
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}  # diffusers' prediction_type -> genkit's
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine",
                  "sigmoid": "sigmoid"}  # diffusers' beta_schedule -> genkit's


def load(path: str | Path, ema: bool = True, device: str | torch.device = "cpu",
         revision: str | None = None) -> TrainedModel:
    """Load for sampling (safetensors, YAML and JSON only; no code runs) a run directory, a
    checkpoint directory, a `save_pretrained` export, or a Hub repository `owner/name` holding
    one (at `revision`; through the Hugging Face cache, offline with HF_HUB_OFFLINE=1), onto
    `device` (`auto`, `cpu`, `cuda[:N]`, `mps`), with the time grids fitted to it (`grids.json`).
    `ema=False` takes a checkpoint's raw weights."""
    local = resolve(path, revision)
    if is_pretrained(local) or is_diffusers_pipeline(local):
        if not ema:
            raise ArgumentError("ema", f"{path} is an export, which holds one set of weights (the EMA's)")
        return load_pretrained(local, device) if is_pretrained(local) else from_diffusers(local, device)
    cfg, net, directory = load_export(local, ema=ema)
    codec = LatentCodec.load(directory / AUTOENCODER_DIR) if cfg.data.autoencoder else None
    model = build_model(cfg, net, device, codec)
    model.directory = directory
    if isinstance(model, GenerativeModel):
        model.grids = read_grids(directory)
    state = read_trainer_state(directory)
    model.training = {k: state[k] for k in ("step", "train_seconds") if k in state}
    return model


def is_diffusers_pipeline(path: str | Path) -> bool:
    """Whether `path` is a diffusers pipeline folder (`model_index.json`) with a scheduler and a
    denoiser genkit can call (genkit's own exports are read by `load_pretrained` first)."""
    path = Path(path)
    return (path / "model_index.json").is_file() and (path / "scheduler").is_dir() and \
        any((path / sub / "config.json").is_file() for sub in DIFFUSERS_DENOISERS)


def diffusers_model_folder(path: str | Path) -> Path | None:
    """The folder of the diffusers model in `path`: a pipeline folder's denoiser (`unet/` or
    `transformer/`), or `path` itself where it holds a model (`config.json` naming its class), else None."""
    path = Path(path)
    if is_diffusers_pipeline(path):
        return next(path / sub for sub in DIFFUSERS_DENOISERS if (path / sub / "config.json").is_file())
    try:
        return path if "_class_name" in json.loads((path / "config.json").read_text()) else None
    except (OSError, ValueError):
        return None


def method_from_scheduler(scheduler: dict, tokens: int | None = None) -> dict:
    """genkit's `method` section for a diffusers scheduler config: DDPM's discrete path from its
    betas (`beta_schedule`, `beta_start`, `beta_end`, `num_train_timesteps`,
    `rescale_betas_zero_snr`, or `trained_betas`) and `prediction_type`, or a rectified flow with
    SD3's `shift` for the flow-matching schedulers; with `use_dynamic_shifting`, the shift e^mu its
    pipelines give for the denoiser's `tokens` (SD3's `calculate_shift`: mu linear in the token
    count between `base_shift` at `base_image_seq_len` and `max_shift` at `max_image_seq_len`).
    Inference settings (`timestep_spacing`, `steps_offset`) are a sampler's choice in genkit
    (`schedule`), not the model's."""
    name = scheduler.get("_class_name", "")
    if name.startswith("FlowMatch"):
        shift = float(scheduler.get("shift", 1.0))
        if scheduler.get("use_dynamic_shifting"):
            if scheduler.get("time_shift_type", "exponential") != "exponential" or tokens is None:
                raise ArgumentError("path", f"{name} shifts its times {scheduler.get('time_shift_type')}ly by the "
                                            f"image size; genkit takes SD3's exponential shift at a known size")
            low, high = scheduler.get("base_image_seq_len", 256), scheduler.get("max_image_seq_len", 4096)
            base, top = scheduler.get("base_shift", 0.5), scheduler.get("max_shift", 1.15)
            shift = math.exp(base + (top - base) * (tokens - low) / (high - low))
        return {"name": "flow", "prediction": "velocity", "flow": {"shift": shift}}
    trained = scheduler.get("trained_betas")
    schedule = "given" if trained is not None else scheduler.get("beta_schedule", "linear")
    prediction = scheduler.get("prediction_type", "epsilon")
    if schedule not in (*BETA_SCHEDULES, "given") or prediction not in PREDICTIONS:
        raise ArgumentError("path", f"{name}: beta_schedule {schedule!r} with prediction_type {prediction!r} "
                                    f"(genkit takes {', '.join(BETA_SCHEDULES)} or trained_betas; "
                                    f"{', '.join(PREDICTIONS)})")
    zero_snr = bool(scheduler.get("rescale_betas_zero_snr", False))
    if trained is not None:
        chain = {"trained_betas": [float(b) for b in trained], "num_timesteps": len(trained)}
    else:
        chain = {"beta_schedule": BETA_SCHEDULES[schedule], "beta_start": float(scheduler.get("beta_start", 1e-4)),
                 "beta_end": float(scheduler.get("beta_end", 0.02)),
                 "num_timesteps": int(scheduler.get("num_train_timesteps", 1000))}
    return {"name": "ddpm", "prediction": PREDICTIONS[prediction], "ddpm": {**chain, "zero_terminal_snr": zero_snr}}


def latent_codec(path: Path | None, pipeline) -> DiffusersAutoencoder | None:
    """The `AutoencoderKL` of a latent pipeline (folder `path`, else the `pipeline` object) as a codec,
    or None for a pixel-space pipeline."""
    from diffusers import AutoencoderKL

    if path is not None:
        if not (path / "vae").is_dir():
            return None
        if DiffusersAutoencoder.folder_in(path / "vae") is None:
            raise ArgumentError("path", f"{path / 'vae'} holds no diffusers AutoencoderKL; genkit decodes a latent "
                                        f"pipeline's latents with one")
        return DiffusersAutoencoder.from_folder(path / "vae")
    vae = getattr(pipeline, "vae", None)
    if vae is None:
        return None
    if not isinstance(vae, AutoencoderKL):
        raise ArgumentError("source", f"the pipeline's vae is a {type(vae).__name__}; genkit decodes a latent "
                                      f"pipeline's latents with an AutoencoderKL")
    return DiffusersAutoencoder(vae, "the pipeline's vae")


def from_diffusers(source, device: str | torch.device = "cpu", embeddings: Embeddings | None = None,
                   null_class: bool = False) -> GenerativeModel:
    """A diffusers pipeline as a genkit model: a folder (`model_index.json`, `scheduler/`, and `unet/`
    or `transformer/`) or a pipeline object (its `unet` or `transformer` and `scheduler`). Its
    denoiser (`genkit.nets.diffusers_net`) runs on the path its scheduler defines
    (`method_from_scheduler`), so that every genkit sampler, the fitted grids and the exact
    likelihood run on it. A class-conditional UNet samples with guidance 1 (its class embedding has
    no null class), unless `null_class`: its training dropped labels to its last class embedding,
    which then is the null class guidance pushes away from; a DiT takes guidance. A latent
    pipeline's `vae` (an `AutoencoderKL`) decodes its samples. An SD3 transformer takes
    `embeddings` (`Embeddings`, or a (prompt, pooled) pair: its text-encoder outputs per class, the
    null class last): a class-conditional model with guidance, or with one row an unconditional one."""
    if isinstance(embeddings, tuple):
        embeddings = Embeddings(*embeddings)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not is_diffusers_pipeline(path):
            raise ArgumentError("path", f"{path} is not a diffusers pipeline folder (model_index.json, scheduler/ "
                                        f"and one of {', '.join(f'{d}/' for d in DIFFUSERS_DENOISERS)})")
        denoiser = diffusers_model_folder(path)
        model = read_model_config(denoiser)
        scheduler_file = path / "scheduler" / "scheduler_config.json"
        if not scheduler_file.is_file():
            raise ArgumentError("path", f"{path}/scheduler holds no scheduler_config.json")
        scheduler, module, where = json.loads(scheduler_file.read_text()), pretrained(denoiser), str(denoiser)
    else:
        module = next((getattr(source, sub) for sub in DIFFUSERS_DENOISERS if getattr(source, sub, None) is not None),
                      None)
        if module is None or getattr(source, "scheduler", None) is None:
            raise ArgumentError("source", f"a {type(source).__name__} is neither a pipeline folder nor a pipeline "
                                          f"with a scheduler and a unet or transformer")
        model = model_config(module)
        scheduler = {**source.scheduler.config, "_class_name": type(source.scheduler).__name__}
        path, denoiser, where = None, "", "the pipeline's denoiser"
    facts = model_facts(model, where, built=path is None, null_class=null_class)
    classes, null = (facts.num_classes, facts.has_null_class) if embeddings is None else (embeddings.num_classes, True)
    if not isinstance(facts.size, int):
        raise ArgumentError("path", f"{where} has sample_size {facts.size!r}; genkit samples square images")
    codec = latent_codec(path, source)
    data = {"image_size": facts.size, "channels": facts.channels}
    if codec is not None:  # the denoiser's size and channels are the latents'
        channels, size, _ = codec.image_shape(facts.size)
        data = {"image_size": size, "channels": channels, "autoencoder": codec.source, "latent_size": facts.size,
                "latent_channels": facts.channels}
    cfg = config_from_dict({
        "method": {**method_from_scheduler(scheduler, (facts.size // int(model.get("patch_size") or 1)) ** 2),
                   **({} if null else {"p_uncond": 0.0})},
        "model": {"name": "diffusers", "num_classes": classes,
                  "diffusers": {"path": str(denoiser), "config": model, "null_class": null_class,
                                "embeddings_shape": list(embeddings.shape) if embeddings is not None else []}},
        "data": {"path": str(path or ""), **data, "label_column": "label" if classes else ""},  # the data are unknown
        "sample": {"guidance": 1.0}})
    loaded = build_model(cfg, from_module(cfg, module, embeddings), device, codec)
    loaded.directory = path
    loaded.grids = read_grids(path) if path is not None else loaded.grids
    return loaded
