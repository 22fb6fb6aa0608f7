"""Data distributions with an exact denoiser, to test samplers against mathematics."""
from __future__ import annotations

import torch

from genkit.paths import GaussianPath


class GaussianMixture:
    """Isotropic mixture sum_k w_k N(mu_k, std^2 I) in D dimensions.

    Under x_t = alpha x0 + sigma eps the marginal is sum_k w_k N(alpha mu_k, (alpha^2 std^2 +
    sigma^2) I), so E[eps | x_t] = sigma * sum_k r_k(x_t) (x_t - alpha mu_k) / var_t with the
    posterior responsibilities r_k: the score, hence every prediction kind, in closed form.
    """

    def __init__(self, means: torch.Tensor, std: float, weights: torch.Tensor | None = None):
        self.means = means.double()  # [K, D]
        self.std = std
        k = len(means)
        self.weights = (weights if weights is not None else torch.full((k,), 1 / k)).double()

    @classmethod
    def random(cls, components: int, dim: int, std: float, seed: int = 0) -> "GaussianMixture":
        """Means uniform in [-1, 1]^dim, equal weights."""
        g = torch.Generator().manual_seed(seed)
        return cls(torch.rand(components, dim, generator=g, dtype=torch.float64) * 2 - 1, std)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact draws: [n, D] float64."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.means[comp] + self.std * torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)

    def posterior(self, x: torch.Tensor, t: torch.Tensor, path: GaussianPath) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact E[x0 | x_t] and E[eps | x_t] for x [B, D], t [B]: two [B, D] float64.

        Per component, E[x0 | x_t, k] = mu_k + alpha std^2 (x_t - alpha mu_k) / var_t, which stays
        finite where alpha = 0 (pure noise); eps follows from x_t = alpha x0 + sigma eps."""
        x = x.double()
        a = path.alpha(t.double())[:, None, None]  # [B, 1, 1]
        s = path.sigma(t.double())[:, None, None]
        var = a**2 * self.std**2 + s**2
        diff = x[:, None, :] - a * self.means[None]  # [B, K, D]
        logits = torch.log(self.weights)[None] - (diff**2).sum(-1) / (2 * var[..., 0])  # [B, K]
        resp = torch.softmax(logits, dim=1)[..., None]  # [B, K, 1]
        x0 = (resp * (self.means[None] + a * self.std**2 * diff / var)).sum(1)
        eps = s[:, 0] * (resp * diff).sum(1) / var[:, 0]
        return x0, eps

    def eps(self, x: torch.Tensor, t: torch.Tensor, path: GaussianPath) -> torch.Tensor:
        """The exact E[eps | x_t] for x [B, D], t [B]: [B, D] float64."""
        return self.posterior(x, t, path)[1]

    def as_net(self, path: GaussianPath, prediction: str = "eps"):
        """A denoiser net(x [B, *shape], t [B], y=None) -> the exact `prediction` [B, *shape] in x's dtype."""
        def net(x, t, y=None):
            t = t.double()
            x = x / path.net_input(torch.ones_like(x, dtype=torch.float64), t)  # undo the input scaling
            x0, eps = self.posterior(x.reshape(len(x), -1), t, path)
            return path.from_x0_eps(x0, eps, t, prediction).reshape(x.shape).to(x.dtype)
        return net


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between equal-size samples [N, D] (Rabin et al. 2011):
    the root mean over random unit directions of the 1-D W2^2 between sorted projections."""
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    if len(a) != len(b):
        raise ValueError("sliced_wasserstein needs samples of equal size")
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(a.shape[1], projections, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, pb = (a @ dirs).sort(dim=0).values, (b @ dirs).sort(dim=0).values  # [N, P]
    return float(((pa - pb) ** 2).mean().sqrt())
