"""Raster-order sampling and scoring of autoregressive nets, naive or cached.

Both walk the pixels in raster order through an evaluator with `logits_at(i, j) -> [B, K]`
and `set_pixel(i, j, value)`: `NaiveEvaluator` runs the whole net for every pixel;
`PixelCNN.cache` recomputes only what the new pixel changes (Ramachandran et al. 2017). Given
the same uniforms they draw the same pixels.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from genkit.methods.autoregressive import pixel_log_probs, to_net_input


class NaiveEvaluator:
    """The full forward pass for every pixel: H * W network evaluations per image."""

    def __init__(self, net, y: torch.Tensor | None, batch: int, height: int, width: int, device, dtype):
        self.net, self.y = net, y
        self.x = torch.zeros(batch, 1, height, width, device=device, dtype=dtype)  # net input scale

    def logits_at(self, i: int, j: int) -> torch.Tensor:
        return self.net(self.x, self.y)[:, :, i, j]

    def set_pixel(self, i: int, j: int, value: torch.Tensor) -> None:
        self.x[:, 0, i, j] = value


def draw(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Pixel values by inverting the CDF at uniforms u [B]: logits [B, K] -> [B] long."""
    if logits.shape[1] == 1:
        return (u < torch.sigmoid(logits[:, 0].double())).long()
    cdf = torch.softmax(logits.double(), dim=1).cumsum(1)  # [B, K]
    return (cdf < u[:, None]).sum(1).clamp(max=logits.shape[1] - 1)


def raster_scan(evaluator, height: int, width: int, levels: int, choose, progress: bool = False) -> None:
    """Visit every pixel in raster order: `choose(i, j, logits [B, K]) -> pixels [B]` fixes it."""
    for i in tqdm(range(height), desc="rows", disable=not progress, leave=False):
        for j in range(width):
            pixels = choose(i, j, evaluator.logits_at(i, j))
            evaluator.set_pixel(i, j, to_net_input(pixels, levels))


def make_evaluator(net, how: str, y, batch: int, height: int, width: int):
    """A `naive` or `cached` evaluator of `net` for a batch of images, in the net's dtype."""
    if how == "cached":
        return net.cache(y, batch, height, width)
    p = next(net.parameters())
    return NaiveEvaluator(net, y, batch, height, width, p.device, p.dtype)


@torch.no_grad()
def sample(net, uniforms: torch.Tensor, y: torch.Tensor | None, levels: int, how: str = "cached",
           progress: bool = False) -> torch.Tensor:
    """Draw pixels [B, 1, H, W] (long, 0..levels-1), pixel (i, j) from uniforms[:, i, j]."""
    b, h, w = uniforms.shape
    evaluator = make_evaluator(net, how, y, b, h, w)
    out = torch.zeros(b, 1, h, w, dtype=torch.long, device=uniforms.device)

    def choose(i, j, logits):
        out[:, 0, i, j] = draw(logits, uniforms[:, i, j])
        return out[:, 0, i, j]

    raster_scan(evaluator, h, w, levels, choose, progress)
    return out


@torch.no_grad()
def conditionals(net, pixels: torch.Tensor, y: torch.Tensor | None, levels: int, how: str = "cached") -> torch.Tensor:
    """log p(x_i | x_<i) of given images [B, 1, H, W], pixel by pixel as a sampler sees them: [B, H, W]."""
    b, _, h, w = pixels.shape
    evaluator = make_evaluator(net, how, y, b, h, w)
    out = torch.zeros(b, h, w, dtype=torch.float64, device=pixels.device)

    def choose(i, j, logits):
        target = pixels[:, :, i, j]  # [B, 1]
        out[:, i, j] = pixel_log_probs(logits[:, :, None, None], target[:, :, None, None])[:, 0, 0]
        return target[:, 0]

    raster_scan(evaluator, h, w, levels, choose)
    return out
