"""Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

Patchify -> tokens + fixed 2-D sin-cos position embeddings -> adaLN-Zero blocks -> final
adaLN layer -> unpatchify, plus a learned input skip (see `InputSkip`). Attention normalises
queries and keys (QK-norm, as SD3).
Written from the paper's description.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from dataclasses import dataclass

from genkit.nets.layers import Attention, ConditionEmbedding, InputSkip, input_shape, zero_module
from genkit.registry import ConfigError, require


@dataclass
class DiTConfig:
    """`model.dit`: the transformer's size."""

    patch_size: int = 2
    hidden_size: int = 256
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0


def check(cfg) -> None:
    """Patches tile the image; heads split the width; the 2-D sin-cos embedding needs width % 4 == 0."""
    dit, size = cfg.model.dit, input_shape(cfg)[1]
    size_key = "data.latent_size" if cfg.data.autoencoder else "data.image_size"
    require(dit, "model.dit", positive=["patch_size", "hidden_size", "num_heads", "mlp_ratio"], layers=["depth"])
    if size % dit.patch_size:
        raise ConfigError(f"model.dit.patch_size: {dit.patch_size} does not divide {size_key} {size}")
    if dit.hidden_size % dit.num_heads:
        raise ConfigError(f"model.dit.num_heads: {dit.num_heads} does not divide model.dit.hidden_size {dit.hidden_size}")
    if (dit.hidden_size // dit.num_heads) % 2 or dit.hidden_size % 4:
        raise ConfigError("model.dit.hidden_size: needs hidden_size % 4 == 0 and an even head width")


def build(cfg) -> "DiT":
    return DiT(cfg.model.dit, *input_shape(cfg), cfg.model.num_classes, cfg.model.interval)


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """sin/cos of positions at `dim // 2` geometric frequencies: [N] -> [N, dim]."""
    omega = 1.0 / 10_000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = positions.double()[:, None] * omega[None]  # [N, dim/2]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


@functools.lru_cache(maxsize=8)
def sincos_2d(grid_h: int, grid_w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D position embedding: the first half of the channels encodes the row, the
    second half the column. Row-major token order: [grid_h * grid_w, dim]."""
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    emb = torch.cat([sincos_1d(rows.flatten(), dim // 2), sincos_1d(cols.flatten(), dim // 2)], dim=1)
    return emb.float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive layer-norm modulation: [B, N, D] with per-sample [B, D] shift and scale."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Transformer block whose norms are modulated by the condition, with zero-initialised
    gates on both residual branches (adaLN-Zero): at initialisation the block is the identity."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads, qk_norm=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada_ln = nn.Sequential(nn.SiLU(), zero_module(nn.Linear(dim, 6 * dim)))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada_ln(c).chunk(6, dim=1)  # [B, D] each
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiT(nn.Module):
    """Class-conditional DiT: `net(x [B,C,H,W], t [B] in [0, 1], y [B] or None, r [B] or None)
    -> [B,C,H,W]`; r, a second time, only with `interval` (see `ConditionEmbedding`)."""

    def __init__(self, cfg: DiTConfig, in_channels: int, image_size: int, num_classes: int, interval: bool = False):
        super().__init__()
        self.patch = cfg.patch_size
        self.in_channels = in_channels
        self.num_classes = num_classes
        dim = cfg.hidden_size
        self.patchify = nn.Conv2d(in_channels, dim, cfg.patch_size, stride=cfg.patch_size)
        self.embed = ConditionEmbedding(256, dim, num_classes, interval)
        self.blocks = nn.ModuleList(DiTBlock(dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_ada_ln = nn.Sequential(nn.SiLU(), zero_module(nn.Linear(dim, 2 * dim)))
        self.final_proj = zero_module(nn.Linear(dim, cfg.patch_size**2 * in_channels))
        self.input_skip = InputSkip(dim, in_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                r: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        p, gh, gw = self.patch, h // self.patch, w // self.patch
        tokens = self.patchify(x).flatten(2).transpose(1, 2)  # [B, N = gh*gw, D]
        tokens = tokens + sincos_2d(gh, gw, tokens.shape[-1]).to(tokens.device)
        cond = self.embed(t, y, r)  # [B, D]
        for block in self.blocks:
            tokens = block(tokens, cond)
        shift, scale = self.final_ada_ln(cond).chunk(2, dim=1)
        out = self.final_proj(modulate(self.final_norm(tokens), shift, scale))  # [B, N, p*p*C]
        out = out.view(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4)  # [B, C, gh, p, gw, p]
        return out.reshape(b, c, h, w) + self.input_skip(x, cond)
