"""The field's Inception metrics: FID (Heusel et al. 2017), KID (Binkowski et al. 2018) and
precision/recall (Kynkaanniemi et al. 2019) in the 2048-d pool features of the Inception-v3 graph
that TensorFlow's FID code froze on 2015-12-05 (Szegedy et al. 2016), from the weights file that
pytorch-fid, clean-fid's "legacy" mode and torch-fidelity use (`pt_inception-2015-12-05-6726825d.pth`,
a state dict). genkit downloads nothing: the user supplies the file.

The protocol, as the field reports it (ADM, Dhariwal & Nichol 2021; EDM, Karras et al. 2022):
50,000 samples against the whole training split, each image resized to 299 x 299 by TensorFlow
1.x's bilinear rule (source pixel = target pixel x in / out, no half-pixel offset), grey repeated
to RGB, 8-bit values mapped to [-1, 1]. FID and KID are computed by torchmetrics from the features
(genkit's own `frechet_distance` agrees, tested); precision and recall with k = 3 by genkit's.
The reference features are cached as an `.npz` with `mu` and `sigma` (the ADM evaluation suite's
keys) and the `features` themselves (KID and precision/recall need them).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from genkit.evaluation.metrics import precision_recall
from genkit.registry import ArgumentError

INPUT_SIZE = 299
FEATURES = 2048
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"


class ConvBN(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, TensorFlow's), ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3 x 3 average over the pixels inside the image only (TensorFlow's padding='SAME' average)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35 x 35 block: 1x1; 1x1 -> 5x5; 1x1 -> 3x3 -> 3x3; pool -> 1x1 (`pool` channels)."""

    def __init__(self, c_in: int, pool: int):
        super().__init__()
        self.branch1x1 = ConvBN(c_in, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = ConvBN(c_in, 48, 1), ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(c_in, pool, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg_pool(x))], 1)


class BlockB(nn.Module):
    """35 -> 17 px reduction: 3x3 stride 2; 1x1 -> 3x3 -> 3x3 stride 2; max pool stride 2."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = ConvBN(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """17 x 17 block with factorised 7 x 7 convolutions (`mid` channels inside)."""

    def __init__(self, c_in: int, mid: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = ConvBN(c_in, 192, 1)
        self.branch7x7_1, self.branch7x7_2, self.branch7x7_3 = ConvBN(c_in, mid, 1), ConvBN(mid, mid, **row), \
            ConvBN(mid, 192, **col)
        self.branch7x7dbl_1, self.branch7x7dbl_2 = ConvBN(c_in, mid, 1), ConvBN(mid, mid, **col)
        self.branch7x7dbl_3, self.branch7x7dbl_4 = ConvBN(mid, mid, **row), ConvBN(mid, mid, **col)
        self.branch7x7dbl_5 = ConvBN(mid, 192, **row)
        self.branch_pool = ConvBN(c_in, 192, 1)

    def forward(self, x):
        single = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            double = conv(double)
        return torch.cat([self.branch1x1(x), single, double, self.branch_pool(_avg_pool(x))], 1)


class BlockD(nn.Module):
    """17 -> 8 px reduction: 1x1 -> 3x3 stride 2; 1x1 -> 1x7 -> 7x1 -> 3x3 stride 2; max pool."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = ConvBN(c_in, 192, 1), ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(c_in, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        seven = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """8 x 8 block with split 1x3 / 3x1 convolutions; the pool branch averages (`max_pool=False`,
    Mixed_7b) or, as the 2015 graph has it in its last block, takes the maximum (Mixed_7c)."""

    def __init__(self, c_in: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN(c_in, 320, 1)
        self.branch3x3_1 = ConvBN(c_in, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = ConvBN(384, 384, (1, 3), padding=(0, 1)), \
            ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = ConvBN(c_in, 448, 1), ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a, self.branch3x3dbl_3b = ConvBN(384, 384, (1, 3), padding=(0, 1)), \
            ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(c_in, 192, 1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a), self.branch3x3dbl_3a(b),
                          self.branch3x3dbl_3b(b), self.branch_pool(pooled)], 1)


def resize_like_tensorflow1(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of x [B, C, H, W] to [B, C, size, size] as TensorFlow 1.x computes it without
    align_corners: target pixel i samples the source at i * in / size (no half-pixel offset), between
    its floor and the next pixel (clamped at the edge)."""
    def weights(n_in: int) -> torch.Tensor:  # [size, n_in]: each row interpolates two source pixels
        src = torch.arange(size, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        frac = src - lo
        w = torch.zeros(size, n_in, dtype=torch.float64)
        w[torch.arange(size), lo] += 1 - frac
        w[torch.arange(size), hi] += frac
        return w.to(x.dtype)

    return torch.einsum("oh,bchw,pw->bcop", weights(x.shape[-2]), x, weights(x.shape[-1]))


class FIDInception(nn.Module):
    """Inception-v3 as frozen for FID (the module docstring): uint8 RGB images [B, 3, H, W] of any
    size -> pool features [B, 2048]. Parameter names follow the FID weights file's."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e = (BlockC(768, mid) for mid in (128, 160, 160, 192))
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b, self.Mixed_7c = BlockE(1280, max_pool=False), BlockE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURES, 1008)  # the 2015 graph's logits: in the weights file, unused by the metrics

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_like_tensorflow1(images.float(), INPUT_SIZE)  # [B, 3, 299, 299]
        x = (x - 128) / 128
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # [B, 64, 147, 147]
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))  # [B, 192, 71, 71]
        x = F.max_pool2d(x, 3, stride=2)  # [B, 192, 35, 35]
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)  # ... -> [B, 2048, 8, 8]
        return x.mean((2, 3))  # [B, 2048]


def load_inception(weights: str | Path) -> FIDInception:
    """`FIDInception` with the weights in `weights` (a state dict, read with `weights_only`: no code
    runs), in eval mode. `ArgumentError` names a file that is missing or holds other weights."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ArgumentError("inception_weights", f"no file at {weights} (the FID Inception weights, {WEIGHTS_NAME})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several kinds for a file that is not a tensor-only pickle
        raise ArgumentError("inception_weights", f"{weights} is not a state dict of tensors ({type(err).__name__})")
    net = FIDInception()
    expected = {k: v.shape for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k: v.shape for k, v in state.items() if not k.endswith("num_batches_tracked")} \
        if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()) else {}
    if given != expected:
        wrong = sorted(set(expected) ^ set(given)) or [k for k in expected if expected[k] != given[k]]
        raise ArgumentError("inception_weights", f"{weights} does not hold the FID Inception's weights "
                                                 f"(first mismatch: {wrong[0]})")
    net.load_state_dict(state, strict=False)
    return net.eval().requires_grad_(False)


class InceptionMetrics:
    """FID, KID and precision/recall of images against a reference set, in `FIDInception` features.

    `weights`: the weights file; `reference(images, cache)` computes (or reads from the `.npz` at
    `cache`) the reference features; `score(images, reference)` the metrics.
    """

    def __init__(self, weights: str | Path, batch_size: int = 50, device: str | torch.device = "cpu",
                 progress: bool = True):
        self.net = load_inception(weights).to(device)
        self.weights_sha = hashlib.sha256(Path(weights).expanduser().read_bytes()).hexdigest()[:16]
        self.batch_size, self.device, self.progress = batch_size, torch.device(device), progress

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features [N, 2048] float64 of images [N, C, H, W]: uint8, or floats in [0, 1] (rounded to 8
        bits, as saved images are); 1 channel is repeated to RGB."""
        out = []
        batches = range(0, len(images), self.batch_size)
        for i in tqdm(batches, desc="Inception features", disable=not self.progress or len(batches) < 4, leave=False):
            x = images[i:i + self.batch_size]
            if x.dtype != torch.uint8:
                x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            out.append(self.net(x.to(self.device)).double().cpu())
        return torch.cat(out)

    def reference(self, images, cache: str | Path | None = None) -> torch.Tensor:
        """Reference features: read from `cache` (an `.npz` written here for the same weights), else
        computed from `images` (a tensor, or a callable that loads one, called only then) and written
        to `cache` with `mu`, `sigma` and the weights' hash."""
        cache = Path(cache) if cache is not None else None
        if cache is not None and cache.is_file():
            with np.load(cache) as stored:
                if str(stored.get("weights_sha", "")) == self.weights_sha and "features" in stored:
                    return torch.from_numpy(stored["features"]).double()
        features = self.features(images() if callable(images) else images)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, mu=features.mean(0).numpy(), sigma=torch.cov(features.T).numpy(),
                     features=features.float().numpy(), weights_sha=self.weights_sha)
            tmp.replace(cache)
        return features

    def score(self, images: torch.Tensor, reference: torch.Tensor, kid_subset: int = 1000,
              kid_subsets: int = 100) -> dict[str, float]:
        """FID, KID (mean and standard deviation over `kid_subsets` subsets of up to `kid_subset`
        images; cubic polynomial kernel) and precision/recall (k = 3) of images against `reference`."""
        return inception_scores(self.features(images), reference, kid_subset, kid_subsets)


def inception_scores(features: torch.Tensor, reference: torch.Tensor, kid_subset: int = 1000,
                     kid_subsets: int = 100, seed: int = 0) -> dict[str, float]:
    """The metrics of `InceptionMetrics.score` from features [N, D] and reference features [M, D]:
    FID and KID by torchmetrics, precision and recall by `genkit.evaluation.precision_recall` (on
    equal-sized sets: k-NN radii depend on the set size)."""
    from torchmetrics.image.fid import FrechetInceptionDistance  # here: importing torchmetrics takes seconds
    from torchmetrics.image.kid import KernelInceptionDistance

    given = nn.Identity()
    given.num_features = features.shape[1]
    fid = FrechetInceptionDistance(feature=given)
    fid.update(reference.double(), real=True)
    fid.update(features.double(), real=False)
    subset = min(kid_subset, len(features), len(reference))
    kid = KernelInceptionDistance(feature=given, subsets=kid_subsets, subset_size=subset)
    kid.update(reference.double(), real=True)
    kid.update(features.double(), real=False)
    with torch.random.fork_rng():  # torchmetrics draws KID's subsets from torch's global generator
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    pick = torch.randperm(len(reference), generator=torch.Generator().manual_seed(seed))[:len(features)]
    precision, recall = precision_recall(reference[pick], features[:len(pick)])
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std), "precision": precision,
            "recall": recall}
