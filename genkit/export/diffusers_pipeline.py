"""genkit models as diffusers components: `GenkitNet` (a `ModelMixin` holding any genkit net and
its config) and `GenkitPipeline` (a `DiffusionPipeline` called the diffusers way).

    pipe = GenkitPipeline.from_pretrained("exported/")            # written by genkit.save_pretrained
    images = pipe(class_labels=[3, 7], num_inference_steps=10, generator=torch.manual_seed(0)).images

The pipeline's scheduler is the sampler: the diffusers scheduler `model.make_scheduler` builds
for the model's path (swap it the diffusers way, `pipe.scheduler = X.from_config(...)`), or, for
paths no diffusers scheduler fits (continuous-time SDEs, autoregressive models), none, and then
the model's own genkit sampler. `sampler=` names a genkit sampler instead.
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers import ConfigMixin, DiffusionPipeline, ImagePipelineOutput, ModelMixin
from diffusers.configuration_utils import register_to_config

from genkit.arguments import MAX_NUM, integer
from genkit.config import config_from_dict
from genkit.images import to_pil
from genkit.inference import GenerativeModel, build_model
from genkit.nets import build_net
from genkit.registry import ArgumentError
from genkit.samplers import SAMPLERS, GridBook

OUTPUT_TYPES = ("pil", "np", "pt")


class GenkitNet(ModelMixin, ConfigMixin):
    """Any genkit net as a diffusers model; its `config.json` holds the whole genkit config and the
    time grids fitted to the model (`genkit.samplers.GridBook.to_dict`, or None)."""

    @register_to_config
    def __init__(self, genkit_config: dict, grids: dict | None = None):
        super().__init__()
        self.net = build_net(config_from_dict(genkit_config))

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """diffusers' loader, then every tensor copied into memory of torch's own: the loader can
        leave weights at offsets that change which CPU kernels run (outputs then differ by an ulp
        or so), and an export should sample exactly as the model it was saved from."""
        loaded = super().from_pretrained(*args, **kwargs)
        for tensor in [*loaded.parameters(), *loaded.buffers()]:
            tensor.data = tensor.data.clone()
        return loaded

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)

    def genkit_model(self, device=None):
        """The genkit inference model (`GenerativeModel` or `AutoregressiveModel`) on this net, with
        its fitted grids."""
        model = build_model(config_from_dict(self.config.genkit_config), self.net, device or self.device)
        if isinstance(model, GenerativeModel) and self.config.grids is not None:
            model.grids = GridBook.checked(self.config.grids, SAMPLERS, "the grids in model/config.json")
        return model


class GenkitPipeline(DiffusionPipeline):
    """Draw images from a genkit model with diffusers' calling conventions; images i of a call
    depend only on (seed, i), the seed being `seed` or drawn from `generator`."""

    model_cpu_offload_seq = "model"
    _optional_components = ["scheduler"]  # none where no diffusers scheduler fits the model's path

    def __init__(self, model: GenkitNet, scheduler=None):
        super().__init__()
        self.register_modules(model=model, scheduler=scheduler)

    @torch.no_grad()
    def __call__(self, class_labels=None, batch_size: int | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, generator: torch.Generator | None = None,
                 seed: int | None = None, output_type: str = "pil", return_dict: bool = True,
                 callback_on_step_end=None, callback_on_step_end_tensor_inputs=("latents",), sampler: str | None = None,
                 **options):
        """`class_labels`: an int or a list (one image each) for a class-conditional model;
        `batch_size`: how many images (default: one per label, else 1); `num_inference_steps`
        and `guidance_scale` default to the model's `sample.steps` and `sample.guidance`.
        `callback_on_step_end(pipe, step, t, {"latents": x_t, "x0": x0_hat})` sees each step
        (read only: returning other tensors is refused). Returns `ImagePipelineOutput` (or a tuple
        when `return_dict=False`) of PIL images, an array [N, H, W, C] or a tensor [N, C, H, W], in [0, 1]."""
        if output_type not in OUTPUT_TYPES:
            raise ArgumentError("output_type", f"must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        if isinstance(generator, list):
            raise ArgumentError("generator", "pass one generator (image i depends only on the seed and i)")
        if batch_size is not None:
            integer(batch_size, "batch_size", 1, MAX_NUM)
        try:  # one image per label by default; the labels themselves are checked by the model
            given = 0 if class_labels is None else torch.as_tensor(class_labels).numel()
        except (TypeError, ValueError, OverflowError, RuntimeError):
            given = 1
        n = batch_size or max(given, 1)
        if seed is None:  # diffusers' convention: a generator, else torch's global random state
            seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
        model = self.model.genkit_model(self.device)
        progress = getattr(self, "_progress_bar_config", {}).get("disable") is not True
        kwargs = dict(seed=seed, labels=class_labels, progress=progress, sampler=sampler)
        if model.family == "denoiser":
            kwargs.update(steps=num_inference_steps, guidance=guidance_scale, sampler=sampler or self.scheduler,
                          **options)
            if callback_on_step_end is not None:
                kwargs["callback"] = self._step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        elif num_inference_steps is not None or guidance_scale is not None or callback_on_step_end or options:
            raise ArgumentError("num_inference_steps", "an autoregressive model draws pixel by pixel: it takes no "
                                                       "steps, guidance, sampler options or step callback")
        images = model.sample(n, **kwargs).images  # [N, C, H, W] in [0, 1]
        if output_type == "pil":
            images = to_pil(images)
        elif output_type == "np":
            images = images.permute(0, 2, 3, 1).numpy().astype(np.float32)  # [N, H, W, C]
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _step_callback(self, fn, inputs):
        names = {"latents", "x0"}
        if not set(inputs) <= names:
            raise ArgumentError("callback_on_step_end_tensor_inputs", f"choose from {sorted(names)}, got {list(inputs)}")

        def callback(step, t, x, x0_hat):
            given = {k: v for k, v in {"latents": x, "x0": x0_hat}.items() if k in inputs}
            returned = fn(self, step, t, dict(given)) or {}
            if any(returned.get(k) is not None and returned[k] is not given[k] for k in given):
                raise ArgumentError("callback_on_step_end", "genkit's samplers take no tensors back from the callback; "
                                                            "return the dict unchanged (or nothing)")
        return callback
