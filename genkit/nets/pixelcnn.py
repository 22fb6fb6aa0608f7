"""Gated PixelCNN without blind spot (van den Oord et al. 2016, "Conditional Image Generation
with PixelCNN Decoders"), with a cache for fast raster-order sampling (Ramachandran et al.
2017, "Fast Generation for Convolutional Autoregressive Models").

Causality comes from shifts rather than masks. The vertical stack at row i sees input rows
<= i; it reaches the horizontal stack shifted down one row, so row i of the horizontal stack
sees only rows < i from it. The horizontal stack sees pixels to its left in its own row: the
input layer shifts the image right one column (the "type A" mask: pixel (i, j) itself is
excluded), and later layers include their own column ("type B"). Together they cover every
earlier pixel, with no blind spot.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dataclasses import dataclass

from genkit.registry import ConfigError, require


@dataclass
class PixelCNNConfig:
    """`model.pixelcnn`: the gated stacks' size."""

    channels: int = 64  # width of the vertical and horizontal stacks
    num_layers: int = 8  # gated blocks after the input layer
    kernel_size: int = 3  # of the gated blocks (odd)
    input_kernel_size: int = 7  # of the input layer (odd)
    head_channels: int = 256  # hidden width of the output head


def check(cfg) -> None:
    p = cfg.model.pixelcnn
    require(p, "model.pixelcnn", positive=["channels", "head_channels"], layers=["num_layers"])
    for key, k in [("kernel_size", p.kernel_size), ("input_kernel_size", p.input_kernel_size)]:
        if k < 1 or k % 2 == 0:
            raise ConfigError(f"model.pixelcnn.{key}: must be a positive odd number, got {k}")


def build(cfg) -> "PixelCNN":
    return PixelCNN(cfg.model.pixelcnn, cfg.method.autoregressive.levels, cfg.model.num_classes)


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Row i takes row i - 1's values; row 0 is zero. [B, C, H, W] -> same."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Column j takes column j - 1's values; column 0 is zero. [B, C, H, W] -> same."""
    return F.pad(x, (1, 0))[..., :-1]


def gate(x: torch.Tensor) -> torch.Tensor:
    """The gated activation tanh(a) * sigmoid(b) of the two channel halves: [B, 2C, ...] -> [B, C, ...]."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class VerticalConv(nn.Conv2d):
    """A k-wide convolution over the k // 2 rows above and the row itself: output (i, j) sees
    input rows i - k // 2 .. i, columns j - k // 2 .. j + k // 2."""

    def __init__(self, in_ch: int, out_ch: int, k: int):
        super().__init__(in_ch, out_ch, (k // 2 + 1, k))
        self.r = k // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.r, self.r, self.r, 0)))


class HorizontalConv(nn.Conv2d):
    """A convolution along the row: output (i, j) sees input (i, j - k // 2 .. j)."""

    def __init__(self, in_ch: int, out_ch: int, k: int):
        super().__init__(in_ch, out_ch, (1, k // 2 + 1))
        self.r = k // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.r, 0)))


class GatedBlock(nn.Module):
    """One gated layer (type B) of both stacks: the vertical stack feeds the horizontal one
    through a 1x1 link after a one-row shift; the horizontal stack is residual and sends a
    skip connection to the output. The class embedding is added to both stacks' gates."""

    def __init__(self, channels: int, k: int, cond_dim: int):
        super().__init__()
        c = channels
        self.v_conv = VerticalConv(c, 2 * c, k)
        self.h_conv = HorizontalConv(c, 2 * c, k)
        self.link = nn.Conv2d(2 * c, 2 * c, 1)
        self.residual = nn.Conv2d(c, c, 1)
        self.skip = nn.Conv2d(c, c, 1)
        self.cond = nn.Linear(cond_dim, 4 * c) if cond_dim else None

    def condition(self, emb: torch.Tensor | None):
        """Per-sample gate biases (vertical, horizontal), [B, 2C, 1, 1] each, or (0, 0)."""
        if self.cond is None:
            return 0, 0
        return self.cond(emb)[:, :, None, None].chunk(2, dim=1)

    def forward(self, v, h, emb):
        cv, ch = self.condition(emb)
        v_pre = self.v_conv(v)  # [B, 2C, H, W]
        h_pre = self.h_conv(h) + self.link(down_shift(v_pre))
        g = gate(h_pre + ch)
        return gate(v_pre + cv), h + self.residual(g), self.skip(g)


class PixelCNN(nn.Module):
    """p(x | y) = prod_i p(x_i | x_<i, y) over the pixels of a one-channel image in raster order.

    `forward(x [B, 1, H, W] in [-1, 1], y [B] or None) -> logits [B, K, H, W]`, where K = 1
    (Bernoulli logits) for `levels = 2` and K = levels (a categorical) otherwise. Class id
    `num_classes` is the null class; `y = None` means it for every sample.
    """

    channels_last = True  # trains faster on a CPU in that memory format

    def __init__(self, cfg: PixelCNNConfig, levels: int = 2, num_classes: int = 0):
        super().__init__()
        c = cfg.channels
        self.num_classes = num_classes
        self.v_in = VerticalConv(1, c, cfg.input_kernel_size)
        self.h_in = HorizontalConv(1, c, cfg.input_kernel_size)
        self.class_embed = nn.Embedding(num_classes + 1, c) if num_classes > 0 else None
        cond_dim = c if num_classes > 0 else 0
        self.blocks = nn.ModuleList(GatedBlock(c, cfg.kernel_size, cond_dim) for _ in range(cfg.num_layers))
        out = 1 if levels == 2 else levels
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(c, cfg.head_channels, 1), nn.ReLU(),
                                  nn.Conv2d(cfg.head_channels, out, 1))

    def embed(self, y: torch.Tensor | None, batch: int, device) -> torch.Tensor | None:
        if self.class_embed is None:
            return None
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        return self.class_embed(y)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(y, x.shape[0], x.device)
        v, h = self.v_in(x), self.h_in(right_shift(x))  # [B, C, H, W] each
        skip = 0
        for block in self.blocks:
            v, h, s = block(v, h, emb)
            skip = skip + s
        return self.head(skip)

    def cache(self, y: torch.Tensor | None, batch: int, height: int, width: int) -> PixelCNNCache:
        return PixelCNNCache(self, y, batch, height, width)


class PixelCNNCache:
    """The net's logits pixel by pixel in raster order, computing only what each new pixel
    changes (Ramachandran et al. 2017): one row of the vertical stack per image row, one column
    of the horizontal stack and the head per pixel. Same weights, same sums as `forward`.

    Call `logits_at(i, j)` for every (i, j) in raster order, each followed by `set_pixel(i, j, v)`.
    """

    def __init__(self, net: PixelCNN, y, batch: int, height: int, width: int):
        p = next(net.parameters())
        like = dict(dtype=p.dtype, device=p.device)
        self.net, self.width = net, width
        self.conds = [block.condition(net.embed(y, batch, p.device)) for block in net.blocks]
        c, r_in, r = net.v_in.out_channels, net.v_in.r, net.blocks[0].v_conv.r
        self.r_in, self.r = r_in, r
        # padded inputs of the vertical convolutions: the image, then each block's vertical input
        self.x_rows = torch.zeros(batch, 1, height + r_in, width + 2 * r_in, **like)
        self.v_rows = [torch.zeros(batch, c, height + r, width + 2 * r, **like) for _ in net.blocks]
        # padded current-row inputs of the horizontal convolutions (left padding only)
        self.x_row = torch.zeros(batch, 1, 1, width + r_in + 1, **like)
        self.h_row = [torch.zeros(batch, c, 1, width + r, **like) for _ in net.blocks]
        # per block: link(v_pre of the row above) [B, 2C, 1, W]; above row 0 it is zero
        self.links = [block.link(torch.zeros(batch, 2 * c, 1, width, **like)) for block in net.blocks]

    def _start_row(self, i: int) -> None:
        """Everything the horizontal stack of row i needs from the rows above: their links."""
        if i == 0:
            return
        net, r, row = self.net, self.r, i - 1  # row i - 1 is complete; with top padding p it sits at row + p
        for buf in [self.x_row, *self.h_row]:
            buf.zero_()
        v = F.conv2d(self.x_rows[:, :, row:row + self.r_in + 1], net.v_in.weight, net.v_in.bias)  # [B, C, 1, W]
        for n, block in enumerate(net.blocks):
            self.v_rows[n][:, :, row + r, r:r + self.width] = v[:, :, 0]
            v_pre = F.conv2d(self.v_rows[n][:, :, row:row + r + 1], block.v_conv.weight, block.v_conv.bias)
            self.links[n] = block.link(v_pre)
            v = gate(v_pre + self.conds[n][0])

    def logits_at(self, i: int, j: int) -> torch.Tensor:
        """Logits of pixel (i, j) given every pixel before it: [B, K]."""
        net, r, r_in = self.net, self.r, self.r_in
        if j == 0:
            self._start_row(i)
        h = F.conv2d(self.x_row[..., j:j + r_in + 1], net.h_in.weight, net.h_in.bias)  # [B, C, 1, 1]
        skip = 0
        for n, block in enumerate(net.blocks):
            self.h_row[n][..., j + r:j + r + 1] = h
            h_pre = F.conv2d(self.h_row[n][..., j:j + r + 1], block.h_conv.weight, block.h_conv.bias)
            g = gate(h_pre + self.links[n][..., j:j + 1] + self.conds[n][1])
            h = h + block.residual(g)
            skip = skip + block.skip(g)
        return net.head(skip)[:, :, 0, 0]

    def set_pixel(self, i: int, j: int, value: torch.Tensor) -> None:
        """Fix pixel (i, j) to `value` [B] (net input scale, [-1, 1])."""
        self.x_rows[:, 0, i + self.r_in, j + self.r_in] = value
        self.x_row[:, 0, 0, j + self.r_in + 1] = value
