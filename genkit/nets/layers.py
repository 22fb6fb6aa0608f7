"""Layers shared by the denoisers: time and class embeddings, attention with optional QK-norm."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TIME_SCALE = 1000.0  # nets see t in [0, 1]; the sinusoids see t * TIME_SCALE, as DDPM's did


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer sinusoids of a scalar per sample (Vaswani et al. 2017): [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]  # [B, half]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class ConditionEmbedding(nn.Module):
    """Time (and class) conditioning vector: MLP(sinusoids(t)) + embedding(y), plus, with
    `interval`, MLP(sinusoids(t - r)) for a second time r (MeanFlow's (t, t - r) conditioning,
    Geng et al. 2025); r = None means r = t.

    Class id `num_classes` is the null class used for classifier-free guidance; `y=None`
    means the null class for every sample.
    """

    def __init__(self, freq_dim: int, dim: int, num_classes: int, interval: bool = False):
        super().__init__()
        self.freq_dim = freq_dim
        self.num_classes = num_classes
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.interval_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim)) \
            if interval else None
        self.class_embed = nn.Embedding(num_classes + 1, dim) if num_classes > 0 else None

    def forward(self, t: torch.Tensor, y: torch.Tensor | None, r: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_mlp(sinusoidal_embedding(t * TIME_SCALE, self.freq_dim))  # [B, dim]
        if self.interval_mlp is not None:
            gap = t - r if r is not None else torch.zeros_like(t)
            emb = emb + self.interval_mlp(sinusoidal_embedding(gap * TIME_SCALE, self.freq_dim))
        elif r is not None:
            raise ValueError("this net embeds one time; build it with model.interval=true to give it r")
        if self.class_embed is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes, dtype=torch.long)
            emb = emb + self.class_embed(y)
        return emb


class _Relayout(torch.autograd.Function):
    """`x` copied into the memory layout `layout`, its gradient copied back into `grad_layout`
    (`Tensor.contiguous` hands the gradient on in whatever layout it came, and PyTorch's CPU
    kernels run slower on operands of mixed layouts than on either layout alone)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layout: torch.memory_format, grad_layout: torch.memory_format) -> torch.Tensor:
        ctx.grad_layout = grad_layout
        return x.contiguous(memory_format=layout)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad.contiguous(memory_format=ctx.grad_layout), None, None


class GroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` that normalises a channels-last half-precision map on a CPU in the contiguous
    layout where that is faster: on maps below 32x32 pixels, and on any map autograd records (in
    training). PyTorch's channels-last CPU kernels are slower in bf16 than the contiguous ones
    there, the backward pass most, by more than the layout copies cost; only the forward pass
    on larger maps is faster in place. Values and gradients leave in the layout they came in.
    fp32 maps gain nothing from the copies and are left alone."""

    SMALL_MAP = 32 * 32  # pixels; smaller maps take the contiguous kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) and x.dim() == 4
                and (x.shape[-2] * x.shape[-1] < self.SMALL_MAP or self._recorded(x))
                and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)):
            nchw, nhwc = torch.contiguous_format, torch.channels_last
            out = super().forward(_Relayout.apply(x, nchw, nhwc))
            return _Relayout.apply(out, nhwc, nchw)
        return super().forward(x)

    def _recorded(self, x: torch.Tensor) -> bool:
        """Whether autograd records this call (its backward pass will run)."""
        return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learnable per-channel scale (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


class Attention(nn.Module):
    """Multi-head self-attention over tokens [B, N, D].

    With `qk_norm`, queries and keys are RMS-normalised per head with a learnable scale before
    the dot product, as in SD3 (Esser et al. 2024), which keeps attention logits bounded.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        head_dim = dim // num_heads
        self.q_norm = RMSNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(head_dim) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, heads, N, head_dim]
        out = attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over [B, heads, N, d].

    SDPA everywhere except bf16 on the CPU, where PyTorch's fused kernel is several times
    slower than two batched matmuls for the short sequences used here
    (benchmarks/throughput.py measures both).
    """
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # [B, heads, N, N]
        return logits.float().softmax(dim=-1).to(v.dtype) @ v
    return F.scaled_dot_product_attention(q, k, v)


class InputSkip(nn.Module):
    """A learned, condition-dependent skip from the input to the output: gate(emb) * x.

    Near pure noise an eps-predicting net must return (almost) its input, and near clean data an
    x0-predicting one must; a per-channel gate from the time embedding makes that a single
    weight to learn, so the deep path only learns the residual. Zero at initialisation.
    """

    def __init__(self, emb_dim: int, channels: int):
        super().__init__()
        self.gate = zero_module(nn.Linear(emb_dim, channels))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.gate(emb)[:, :, None, None] * x  # [B, C, 1, 1] * [B, C, H, W]


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters so that a residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def input_shape(cfg) -> tuple[int, int]:
    """(channels, size) of what a denoiser sees: `cfg.data`'s images, or with `data.autoencoder`
    their latents (`data.latent_channels`, `data.latent_size`; 0 until the trainer reads them off
    the autoencoder)."""
    if cfg.data.autoencoder:
        return cfg.data.latent_channels, cfg.data.latent_size
    return cfg.data.channels, cfg.data.image_size
