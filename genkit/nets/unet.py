"""ADM-style UNet denoiser (Ho et al. 2020; Dhariwal & Nichol 2021, "Diffusion Models Beat GANs").

Residual blocks take the time/class embedding as a scale-shift after GroupNorm; chosen
resolutions get self-attention; every residual branch and the output convolution start at
zero. A learned, time-dependent input skip (`InputSkip`) lets the net return its input where
the target is nearly the input (eps near pure noise).

Two choices keep the full-resolution level cheap, where activations are largest and a CPU step
is bound by memory traffic: the number of residual blocks is set per level, and upsampling
narrows to the finer level's width as it doubles the resolution (the up-convolution of the
original U-Net, Ronneberger et al. 2015) instead of convolving the coarse width at the fine
resolution. That upsampling (nearest-neighbour 2x, then a 3x3 convolution) runs as the one
transposed convolution it equals (`UpsampleConv`).

With `patch_size` p > 1 the net never sees the full resolution: the image enters as its p x p
patches stacked into channels (space-to-depth, `pixel_unshuffle`) and leaves the same way back,
the first layer of "simple diffusion" (Hoogeboom et al. 2023) that avoids full-resolution
feature maps; at p = 2 every level works on a quarter of the pixels for the same parameters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dataclasses import dataclass

from genkit.nets.layers import Attention, ConditionEmbedding, GroupNorm, InputSkip, input_shape, zero_module
from genkit.registry import MAX_LAYERS, ConfigError, require


@dataclass
class UNetConfig:
    """`model.unet`: the UNet's size and layout."""

    channels: int = 64  # width of the first level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # width multiplier per resolution level
    num_res_blocks: tuple[int, ...] = (2,)  # residual blocks on the way down: one count, or one per level
    attention_resolutions: tuple[int, ...] = (8,)  # feature-map sizes that get self-attention
    head_channels: int = 32  # channels per attention head
    dropout: float = 0.0
    patch_size: int = 1  # p: the net runs on p x p patches stacked into channels (1: on pixels)

    def blocks_per_level(self) -> tuple[int, ...]:
        """`num_res_blocks` as one count per level (a single count, or a bare int, is repeated)."""
        counts = (self.num_res_blocks,) if isinstance(self.num_res_blocks, int) else tuple(self.num_res_blocks)
        return counts * len(self.channel_mult) if len(counts) == 1 else counts


def check(cfg) -> None:
    """What a run config must satisfy for a UNet: GroupNorm's 32 groups, whole attention heads,
    and an image size that splits into patches and then halves at every level."""
    unet, size = cfg.model.unet, input_shape(cfg)[1]
    size_key = "data.latent_size" if cfg.data.autoencoder else "data.image_size"
    require(unet, "model.unet", positive=["channels", "head_channels", "patch_size"], unit=["dropout"])
    if not unet.channel_mult or min(unet.channel_mult) <= 0:
        raise ConfigError(f"model.unet.channel_mult: needs positive entries, got {list(unet.channel_mult)}")
    blocks = unet.blocks_per_level()
    if not blocks or min(blocks) <= 0 or max(blocks) > MAX_LAYERS:
        raise ConfigError(f"model.unet.num_res_blocks: needs entries in 1..{MAX_LAYERS}, got {list(blocks)}")
    if len(blocks) != len(unet.channel_mult):
        raise ConfigError(f"model.unet.num_res_blocks: give one count or one per level of model.unet.channel_mult "
                          f"({len(unet.channel_mult)}), got {list(blocks)}")
    levels = len(unet.channel_mult) - 1
    if size % (unet.patch_size * 2**levels):
        raise ConfigError(f"{size_key}: {size} is not divisible by {unet.patch_size * 2**levels} (model.unet.patch_size "
                          f"{unet.patch_size} x 2**{levels} for the {levels + 1} levels of model.unet.channel_mult)")
    for mult in unet.channel_mult:
        if (unet.channels * mult) % unet.head_channels or (unet.channels * mult) % 32:
            raise ConfigError(f"model.unet.channels: {unet.channels} x {mult} must be a multiple of 32 "
                              f"(GroupNorm) and of model.unet.head_channels ({unet.head_channels})")


def build(cfg) -> "UNet":
    return UNet(cfg.model.unet, *input_shape(cfg), cfg.model.num_classes, cfg.model.interval)


def _norm(channels: int) -> GroupNorm:
    return GroupNorm(32, channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, scale-shift by the embedding, GroupNorm-SiLU-dropout-conv, plus skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(_norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.out_norm = _norm(out_ch)
        self.out_layers = nn.Sequential(
            nn.SiLU(), nn.Dropout(dropout), zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1)))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)  # [B, C, 1, 1] each
        h = self.out_norm(h) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class UpsampleConv(nn.Conv2d):
    """Nearest-neighbour 2x upsampling followed by this 3x3 convolution, computed as the stride-2
    transposed convolution with a 4x4 kernel that equals it (each output pixel sees 2x2 input
    pixels): 16 instead of 36 multiply-adds per input pixel and channel pair, and no upsampled
    copy (most of the bf16 sampling gain in benchmarks/throughput.py). The weights stay those of
    the 3x3 convolution, so checkpoints are unchanged."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(in_ch, out_ch, 3, padding=1)

    @staticmethod
    def _transposed_taps(w: torch.Tensor, dim: int) -> torch.Tensor:
        """3 taps (w0, w1, w2) along `dim` -> the 4 taps of the stride-2 transposed convolution:
        an even output row 2i sees input rows i-1 (w0) and i (w1 + w2), an odd one 2i+1 sees
        rows i (w0 + w1) and i+1 (w2); the transposed convolution lists them flipped."""
        w0, w1, w2 = w.unbind(dim)
        return torch.stack([w2, w1 + w2, w0 + w1, w0], dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, H, W] -> [B, C_out, 2H, 2W]
        kernel = self._transposed_taps(self._transposed_taps(self.weight, 2), 3)  # [C_out, C_in, 4, 4]
        return F.conv_transpose2d(x, kernel.transpose(0, 1), self.bias, stride=2, padding=1)


class AttentionBlock(nn.Module):
    """Self-attention over the pixels of a feature map, as a residual branch."""

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.attn = Attention(channels, channels // head_channels)
        zero_module(self.attn.proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, H*W, C]
        out = self.attn(tokens).transpose(1, 2).reshape(b, c, h, w)
        return x + out


class Level(nn.Module):
    """Residual blocks (each optionally followed by attention) at one resolution."""

    def __init__(self, channels: list[tuple[int, int]], emb_dim: int, attention: bool, cfg: UNetConfig):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(i, o, emb_dim, cfg.dropout) for i, o in channels)
        self.attn = nn.ModuleList(
            AttentionBlock(o, cfg.head_channels) if attention else nn.Identity() for _, o in channels)


class UNet(nn.Module):
    """Class-conditional UNet: `net(x [B,C,H,W], t [B] in [0, 1], y [B] or None, r [B] or None)
    -> [B,C,H,W]`; r, a second time, only with `interval` (see `ConditionEmbedding`). Feature-map
    sizes (`attention_resolutions`) count patches when `patch_size` > 1."""

    # CPU inference (fp32 and bf16) and CPU training in half precision run faster so
    # (see `GroupNorm`; benchmarks/throughput.py)
    cpu_channels_last = True

    def __init__(self, cfg: UNetConfig, in_channels: int, image_size: int, num_classes: int, interval: bool = False):
        super().__init__()
        ch, p = cfg.channels, cfg.patch_size
        emb_dim = 4 * ch
        self.num_classes = num_classes
        # p x p patches to channels and back; at p = 1 nothing (pixel_unshuffle(x, 1) would copy x)
        self.to_patches = nn.PixelUnshuffle(p) if p > 1 else nn.Identity()
        self.from_patches = nn.PixelShuffle(p) if p > 1 else nn.Identity()
        self.embed = ConditionEmbedding(ch, emb_dim, num_classes, interval)
        self.stem = nn.Conv2d(in_channels * p * p, ch, 3, padding=1)

        widths = [ch * m for m in cfg.channel_mult]
        blocks = cfg.blocks_per_level()
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, cur, size = [ch], ch, image_size // p
        for i, width in enumerate(widths):
            pairs = []
            for _ in range(blocks[i]):
                pairs.append((cur, width))
                cur = width
                skips.append(cur)
            self.down.append(Level(pairs, emb_dim, size in cfg.attention_resolutions, cfg))
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
                size //= 2

        self.mid = Level([(cur, cur), (cur, cur)], emb_dim, False, cfg)
        self.mid_attn = AttentionBlock(cur, cfg.head_channels)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            pairs = []
            for _ in range(blocks[i] + 1):  # one more block: it eats the downsample skip
                pairs.append((cur + skips.pop(), width))
                cur = width
            self.up.append(Level(pairs, emb_dim, size in cfg.attention_resolutions, cfg))
            if i > 0:
                self.upsample.append(UpsampleConv(cur, widths[i - 1]))
                cur, size = widths[i - 1], size * 2

        self.head = nn.Sequential(_norm(cur), nn.SiLU(), zero_module(nn.Conv2d(cur, in_channels * p * p, 3, padding=1)))
        self.input_skip = InputSkip(emb_dim, in_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                r: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(t, y, r)  # [B, 4*ch]
        h = self.stem(self.to_patches(x))  # [B, C*p*p, H/p, W/p] -> [B, ch, H/p, W/p]
        skips = [h]
        for i, level in enumerate(self.down):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(h, emb))
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)  # [B, C, H/2, W/2]
                skips.append(h)
        h = self.mid.res[0](h, emb)
        h = self.mid.res[1](self.mid_attn(h), emb)
        for i, level in enumerate(self.up):
            for res, attn in zip(level.res, level.attn):
                h = attn(res(torch.cat([h, skips.pop()], dim=1), emb))
            if i < len(self.upsample):
                h = self.upsample[i](h)  # [B, C_finer, 2H, 2W]
        return self.from_patches(self.head(h)) + self.input_skip(x, emb)  # [B, C*p*p, H/p, W/p] -> [B, C, H, W]
