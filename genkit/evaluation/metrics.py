"""Sample-quality metrics on feature vectors: FID, precision/recall, class coverage."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and covariance [D, D] (unbiased) of features [N, D], in float64."""
    f = features.double()
    return f.mean(0), torch.cov(f.T)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(matrix)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Squared Frechet distance between N(mu1, cov1) and N(mu2, cov2) (Heusel et al. 2017):
    |mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1^1/2 cov2 cov1^1/2)^1/2), through symmetric
    eigendecompositions, so that it needs no complex square roots."""
    root1 = _sqrt_psd(cov1.double())
    cross = torch.linalg.eigvalsh(root1 @ cov2.double() @ root1).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).double().square().sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross
    return float(value.clamp(min=0))


def fid(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """FID between two feature sets [N, D] and [M, D]."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


def _kth_neighbour_radius(points: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance from each point [N, D] to its k-th nearest other point: [N]."""
    radii = []
    for i in range(0, len(points), chunk):
        d = torch.cdist(points[i:i + chunk], points)  # [chunk, N]; the point itself is at distance 0
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _inside_any_ball(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Whether each query [Q, D] lies within radius[j] of some centre j: [Q] bool."""
    hits = []
    for i in range(0, len(queries), chunk):
        d = torch.cdist(queries[i:i + chunk], centres)  # [chunk, C]
        hits.append((d <= radii[None]).any(1))
    return torch.cat(hits)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the union
    of balls reaching every point's k-th nearest neighbour. Precision is the fraction of fake
    points on the real manifold; recall the fraction of real points on the fake manifold."""
    real, fake = real.float(), fake.float()
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points per set")
    precision = _inside_any_ball(fake, real, _kth_neighbour_radius(real, k)).float().mean()
    recall = _inside_any_ball(real, fake, _kth_neighbour_radius(fake, k)).float().mean()
    return float(precision), float(recall)


def class_coverage(probs: torch.Tensor, confident: float = 0.9) -> dict[str, float]:
    """How evenly and how clearly samples cover the classes, from classifier probabilities [N, K]:
    `class_entropy` is the entropy of the predicted-class histogram over its maximum log K
    (1 = every class equally often); `confident_fraction` the share of samples whose top
    class has probability >= `confident`; `classes_hit` how many classes occur at all."""
    k = probs.shape[1]
    hist = torch.bincount(probs.argmax(1), minlength=k).double() / len(probs)
    entropy = -(hist[hist > 0] * hist[hist > 0].log()).sum()
    return {"class_entropy": float(entropy / math.log(k)),
            "confident_fraction": float((probs.max(1).values >= confident).double().mean()),
            "classes_hit": int((hist > 0).sum())}


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images [N, C, H, W] in [0, 1], per image: [N]
    (infinite for identical images)."""
    mse = (a.double() - b.double()).square().flatten(1).mean(1)
    return -10 * torch.log10(mse)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of images [N, C, H, W] in [0, 1], per image: [N].
    Local statistics under a Gaussian window (11 px, sigma 1.5) over the valid region, the paper's
    constants C1 = (0.01)^2, C2 = (0.03)^2 for a dynamic range of 1, averaged over channels."""
    a, b = a.double(), b.double()
    c = a.shape[1]
    g = torch.exp(-((torch.arange(window, dtype=torch.float64) - (window - 1) / 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None]).expand(c, 1, window, window)  # one [window, window] filter per channel

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=c)  # [N, C, H - window + 1, W - window + 1]

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.flatten(1).mean(1)
