"""The evaluation report of a trained model (what `genkit eval` writes to eval.json), for any model kind:

- a Gaussian-path model: `num` samples scored by the `Evaluator` (FID, precision/recall, class
  coverage) beside the real-data floor, and optionally bits/dim of the first `bpd` test images;
- an autoregressive model: its exact test NLL (and generative classification), nothing sampled;
- an autoencoder: PSNR, SSIM and reconstruction FID of the first `num` test images.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from genkit.arguments import check_draw, integer, number
from genkit.data import label_frequencies, load_images, resolve_data_path
from genkit.evaluation.evaluate import Evaluator
from genkit.evaluation.inception import InceptionMetrics
from genkit.inference.distributed import sample_across_processes
from genkit.registry import ArgumentError

INCEPTION_CACHE = "inception_train.npz"  # beside a local data set: its training split's Inception features
# what only a sampled model's report takes
SAMPLING = ("sampler", "steps", "guidance", "guidance_interval", "labels", "schedule")
MAX_PROBES = 1000


def evaluation_report(model, num: int = 10_000, seed: int = 0, batch_size: int = 256, precision: str = "no",
                      progress: bool = True, sampler=None, steps: int | None = None, guidance: float | None = None,
                      labels=None, schedule=None, compile: bool = False, guidance_interval=None,
                      bpd: int = 0, bpd_estimator: str = "auto", bpd_probes: int = 4, bpd_tol: float = 1e-5,
                      feature_net=None, inception_weights=None,
                      inception_reference=None, data_path: str | None = None, **options) -> dict:
    """The report of `model` (`genkit.load(...)`), as a JSON-ready dict; see the module. Sampling
    arguments go to `model.sample`; `bpd` test images are scored through the probability-flow ODE with
    `bpd_estimator` (`genkit.likelihood`), `bpd_probes` Hutchinson probes and dopri5 at rtol = atol
    = `bpd_tol`; the data set is the model's (`cfg.data`), or the one at `data_path` seen at the
    model's geometry (a model whose own is unknown or elsewhere: a diffusers pipeline); samples are scored in `feature_net` (a directory; default: the first that reads the
    model's data, `Evaluator`). With `inception_weights` (the FID Inception weights file), the samples'
    FID, KID and precision/recall in Inception features against the whole training split, cached at
    `inception_reference` (default: DATA/inception_train.npz for a local data set), and the same for
    as many test images (`genkit.evaluation.inception`). `ArgumentError` names an argument that does
    not apply to the model's kind."""
    num, seed, batch_size, _, _ = check_draw(num, seed, batch_size)
    bpd = integer(bpd, "bpd", 0, 10**6)
    bpd_probes = integer(bpd_probes, "bpd_probes", 1, MAX_PROBES)
    bpd_tol = number(bpd_tol, "bpd_tol")
    if not 0 < bpd_tol < 1:
        raise ArgumentError("bpd_tol", f"must lie in (0, 1), got {bpd_tol}")
    given = {"sampler": sampler, "steps": steps, "guidance": guidance, "guidance_interval": guidance_interval,
             "labels": labels, "schedule": schedule}
    if model.family != "denoiser":
        why = {"autoregressive": "an autoregressive model, whose likelihood is exact and needs no sampling",
               "autoencoder": "an autoencoder, which is scored on its reconstructions of the test split"}[model.family]
        refused = [name for name, value in given.items() if value is not None] + [*options] + \
            (["bpd"] if bpd else []) + (["compile"] if compile else []) + \
            (["feature_net"] if feature_net and model.family == "autoregressive" else []) + \
            (["inception_weights"] if inception_weights else [])
        if refused:
            raise ArgumentError(refused[0], f"does not apply to {why}")
    data = model.cfg.data if data_path is None else dataclasses.replace(model.cfg.data, path=str(data_path))
    head = {"checkpoint": str(model.directory), "seed": seed}
    if model.family == "autoregressive":
        test = load_images(data, split="test", limit=num)
        prior = label_frequencies(data, model.num_classes) if model.num_classes else None
        scores = model.evaluate(test.images, test.labels, prior, seed=seed, batch_size=batch_size, precision=precision,
                                progress=progress)
        return {**head, "precision": precision, **scores}
    if num < Evaluator.min_images:
        raise ArgumentError("n", f"evaluation needs at least {Evaluator.min_images} images, got {num}")
    if bpd and model.codec is not None:
        raise ArgumentError("bpd", "a latent model's density is over latents, not pixels: it has no bits/dim")
    evaluator = Evaluator(data, feature_net)  # refuses data it cannot score before anything is drawn
    inception = InceptionMetrics(inception_weights, device=model.device, progress=progress) \
        if inception_weights is not None else None
    if model.family == "autoencoder":
        test = load_images(data, split="test", limit=num)
        scores = model.evaluate(test.images, batch_size=batch_size, precision=precision, evaluator=evaluator)
        floor = evaluator.floor(len(test), seed=seed)
        return {**head, "precision": precision, **scores,
                "real_data_floor": {"fid": floor["fid"], "images": floor["images"]}}
    drawn = sample_across_processes(model, num, seed=seed, sampler=sampler, steps=steps, guidance=guidance,
                                    labels=labels, schedule=schedule, batch_size=batch_size, precision=precision,
                                    progress=progress, compile=compile, guidance_interval=guidance_interval, **options)
    scores = evaluator.score(drawn.images, drawn.labels, seed=seed)
    inception_report = _inception(inception, data, drawn.images, inception_reference) if inception else None
    sc = model.cfg.sample
    report = {**head, "num": num, "sampler": sampler if isinstance(sampler, str) else sc.sampler,
              "steps": steps or sc.steps, "guidance": sc.guidance if guidance is None else guidance,
              "nfe": drawn.nfe, "metrics": scores, "real_data_floor": evaluator.floor(num, seed=seed)}
    interval = model.interval_for(guidance_interval, report["guidance"])
    if interval:  # guidance applied within these sigma/alpha only
        report["guidance_interval"] = list(interval)
    if inception_report is not None:
        report["inception"] = inception_report
    if bpd:
        test = load_images(data, split="test", limit=bpd)
        mean, stderr, nfe = model.bits_per_dim(test.images, seed=seed, estimator=bpd_estimator, probes=bpd_probes,
                                               precision=precision, rtol=bpd_tol, atol=bpd_tol, progress=progress)
        report["bits_per_dim"] = {"images": len(test), "mean": mean, "stderr": stderr, "nfe_per_batch": nfe,
                                  "estimator": bpd_estimator, "probes": bpd_probes}
    return report


def _inception(metrics: InceptionMetrics, data, images, cache) -> dict:
    """The Inception block of the report: the samples and as many test images, each against the
    training split's features (read from `cache`, or computed and written there)."""
    local = Path(resolve_data_path(data.path))
    if cache is None and local.is_dir():
        cache = local / INCEPTION_CACHE
    reference = metrics.reference(lambda: load_images(data, split="train", progress=metrics.progress).images, cache)
    test = load_images(data, split="test", limit=len(images), progress=metrics.progress).images
    return {**metrics.score(images, reference), "real_data_floor": {**metrics.score(test, reference), "images": len(test)},
            "reference": {"split": "train", "images": len(reference), "cache": str(cache) if cache else None,
                          "weights_sha256_16": metrics.weights_sha}}
