"""What the Gaussian-path methods share: noise the data on the path, predict, regress."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from genkit.paths import GaussianPath


def loss_weight(snr: torch.Tensor, prediction: str, x0_weight: torch.Tensor) -> torch.Tensor:
    """Turn a weight on the x0-space error into one on a `prediction`-space error, since
    |eps error|^2 = SNR |x0 error|^2 and |v error|^2 = (SNR + 1) |x0 error|^2."""
    per_space = {"x0": torch.ones_like(snr), "eps": snr, "v": snr + 1}
    if prediction not in per_space:
        raise ValueError(f"SNR weighting is defined for eps, x0 and v predictions, not {prediction!r}")
    return x0_weight / per_space[prediction]


def drop_labels(y: torch.Tensor | None, p: float, null_class: int, generator: torch.Generator | None):
    """Replace each label by the null class with probability p (classifier-free guidance,
    Ho & Salimans 2022): one net learns p(x | y) and p(x)."""
    if y is None or p <= 0:
        return y
    drop = torch.rand(len(y), generator=generator).to(y.device) < p
    return torch.where(drop, torch.full_like(y, null_class), y)


class DenoisingMethod:
    """A net regressed onto `prediction` at x_t = alpha x0 + sigma eps for t from `sample_time`.

    `cfg` is the run's `method` section; subclasses define `build_path(cfg)` and `sample_time(n,
    generator) -> (t [n] float64, weight [n] or None)`. Labels are dropped to the null class with
    probability `p_uncond` for classifier-free guidance.
    """

    def __init__(self, cfg, num_classes: int = 0, path: GaussianPath | None = None):
        self.cfg = cfg
        self.null_class = num_classes
        self.prediction = cfg.resolved_prediction
        self.path = path if path is not None else self.build_path(cfg)

    @staticmethod
    def build_path(cfg) -> GaussianPath:
        raise NotImplementedError  # abstract

    def log_terms(self, loss: float, dims: int) -> dict:
        """Extra figures to log beside the loss (none: a denoising loss is no likelihood)."""
        return {}

    def sample_time(self, n: int, generator: torch.Generator | None):
        raise NotImplementedError  # abstract

    def loss(self, net, x0: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator | None = None,
             noise: torch.Tensor | None = None):
        """Weighted mean squared error of the net's prediction at a randomly drawn time; `noise`
        couples each x0 with its own noise (reflow pairs) instead of fresh draws."""
        b = x0.shape[0]
        t, weight = self.sample_time(b, generator)
        eps = torch.randn(x0.shape, generator=generator).to(x0) if noise is None else noise.to(x0)
        x_t = self.path.noise(x0, eps, t)
        target = self.path.from_x0_eps(x0, eps, t, self.prediction)
        y = drop_labels(y, self.cfg.p_uncond, self.null_class, generator)
        pred = net(self.path.net_input(x_t, t), t.to(x0), y)
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)  # [B]
        return per_sample.mean() if weight is None else (weight.to(per_sample) * per_sample).mean()
