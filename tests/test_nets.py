import dataclasses
import math

import pytest
import torch

from genkit.config import load_config
from genkit.nets.dit import DiTConfig
from genkit.nets.unet import UNetConfig, UpsampleConv
from genkit.methods import build_method
from genkit.nets import DiT, UNet, build_net
from genkit.nets.dit import sincos_2d
from genkit.nets.layers import Attention, GroupNorm, RMSNorm
from tests.conftest import perturb


@pytest.mark.parametrize("net, channels, size", [
    (UNet(UNetConfig(channels=32, channel_mult=(1,), num_res_blocks=1, attention_resolutions=()), 1, 12, 3), 1, 12),
    (UNet(UNetConfig(channels=32, channel_mult=(1, 2, 3), num_res_blocks=1, attention_resolutions=(4, 8)), 3, 16, 0), 3, 16),
    (UNet(UNetConfig(channels=64, channel_mult=(1, 1), num_res_blocks=2, head_channels=64, dropout=0.1), 2, 8, 10), 2, 8),
    (UNet(UNetConfig(channels=32, channel_mult=(1, 2, 2), num_res_blocks=(1, 3, 2)), 1, 16, 10), 1, 16),
    (UNet(UNetConfig(channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,), patch_size=2),
          3, 16, 10), 3, 16),
    (DiT(DiTConfig(patch_size=2, hidden_size=32, depth=1, num_heads=2), 1, 6, 5), 1, 6),
    (DiT(DiTConfig(patch_size=4, hidden_size=48, depth=2, num_heads=3, mlp_ratio=2.0), 3, 16, 0), 3, 16),
], ids=["unet-1level-12px", "unet-3levels-rgb", "unet-2ch", "unet-blocks-per-level", "unet-patch2-rgb", "dit-6px", "dit-p4-rgb"])
def test_output_shape_for_odd_configs(net, channels, size):
    x = torch.randn(3, channels, size, size)
    y = torch.randint(0, net.num_classes, (3,)) if net.num_classes else None
    out = perturb(net)(x, torch.rand(3), y)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_conditioning_and_null_class(name):
    cfg = load_config(None, [f"model.name={name}", "data.image_size=8", "model.unet.channel_mult=[1,2]",
                             "model.unet.attention_resolutions=[4]", "model.dit.hidden_size=32",
                             "model.dit.depth=2", "model.dit.num_heads=2"])
    net = perturb(build_net(cfg)).eval()
    x, t = torch.randn(4, 1, 8, 8), torch.full((4,), 0.5)
    y = torch.tensor([0, 1, 2, 3])
    assert not torch.allclose(net(x, t, y), net(x, t, (y + 1) % 10), atol=1e-4)  # the class matters
    assert not torch.allclose(net(x, t, y), net(x, t * 0.5, y), atol=1e-4)  # the time matters
    null = torch.full((4,), 10)
    assert torch.equal(net(x, t, None), net(x, t, null))  # y=None is the null class


def test_dit_blocks_are_identity_at_init():
    net = DiT(DiTConfig(hidden_size=32, depth=3, num_heads=2), 1, 8, 10)
    tokens, cond = torch.randn(2, 16, 32), torch.randn(2, 32)
    for block in net.blocks:
        assert torch.equal(block(tokens, cond), tokens)
    assert torch.equal(net(torch.randn(2, 1, 8, 8), torch.rand(2)), torch.zeros(2, 1, 8, 8))


def test_unet_output_is_zero_at_init():
    net = UNet(UNetConfig(channels=32, channel_mult=(1, 2)), 1, 8, 10)
    assert torch.equal(net(torch.randn(2, 1, 8, 8), torch.rand(2)), torch.zeros(2, 1, 8, 8))


def test_unet_blocks_per_level_and_narrowing_upsample():
    net = UNet(UNetConfig(channels=32, channel_mult=(1, 2, 3), num_res_blocks=(1, 3, 2)), 1, 16, 10)
    assert [len(level.res) for level in net.down] == [1, 3, 2]
    assert [len(level.res) for level in net.up] == [3, 4, 2]  # coarsest first; one extra block per level
    # each upsampling conv hands the next finer level its own width
    assert [(conv.in_channels, conv.out_channels) for conv in net.upsample] == [(96, 64), (64, 32)]
    same = UNet(UNetConfig(channels=32, channel_mult=(1, 2), num_res_blocks=2), 1, 8, 10)
    assert [len(level.res) for level in same.down] == [2, 2]


@pytest.mark.parametrize("patch", [2, 4])
def test_unet_on_patches_is_a_unet_on_the_stacked_patch_channels(patch):
    """`patch_size` p: the net is the p = 1 net on pixel_unshuffle(x) (C*p*p channels, H/p x W/p),
    its output put back by pixel_shuffle; the input skip, per image channel, aside (zeroed)."""
    cfg = UNetConfig(channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,))
    size = 8 * patch
    patched = perturb(UNet(dataclasses.replace(cfg, patch_size=patch), 3, size, 10))
    plain = UNet(cfg, 3 * patch * patch, size // patch, 10)
    for net in (patched, plain):
        torch.nn.init.zeros_(net.input_skip.gate.weight)
        torch.nn.init.zeros_(net.input_skip.gate.bias)
    state = {k: v for k, v in patched.state_dict().items() if not k.startswith("input_skip")}
    plain.load_state_dict(state, strict=False)
    x, t, y = torch.randn(2, 3, size, size), torch.rand(2), torch.tensor([1, 7])
    expected = torch.nn.functional.pixel_shuffle(plain(torch.nn.functional.pixel_unshuffle(x, patch), t, y), patch)
    out = patched(x, t, y)
    assert out.shape == x.shape and out.abs().mean() > 1e-3
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("height, width, channels_last", [(5, 7, False), (8, 8, True), (1, 1, False)])
def test_upsample_conv_is_nearest_upsampling_then_its_3x3_conv(height, width, channels_last):
    """The transposed convolution equals F.interpolate(nearest, 2x) then conv2d(padding 1) with the
    same weights, in value and in the gradients of input, weight and bias."""
    torch.manual_seed(0)
    up = UpsampleConv(5, 3).double()
    x = torch.randn(2, 5, height, width, dtype=torch.float64, requires_grad=True)
    if channels_last:
        up = up.to(memory_format=torch.channels_last)
    out = up(x)
    ref = torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"),
                                     up.weight, up.bias, padding=1)
    assert out.shape == (2, 3, 2 * height, 2 * width)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    cotangent = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (x, up.weight, up.bias), cotangent)
    ref_grads = torch.autograd.grad(ref, (x, up.weight, up.bias), cotangent)
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size", [8, 32])
def test_group_norm_gives_the_contiguous_kernels_values_in_the_inputs_layout(dtype, size):
    norm = GroupNorm(4, 8).to(dtype)
    torch.nn.init.normal_(norm.weight), torch.nn.init.normal_(norm.bias)
    x = torch.randn(3, 8, size, size).to(dtype)
    out = norm(x.to(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, torch.nn.functional.group_norm(x, 4, norm.weight, norm.bias),
                               **({} if dtype == torch.float32 else dict(rtol=0, atol=0.04)))


@pytest.mark.parametrize("size", [8, 32])
def test_group_norm_in_training_gives_the_contiguous_kernels_gradients(size):
    """A recorded call takes the contiguous kernel at every map size: same values and gradients,
    the input's gradient in the input's layout (mixed layouts slow the next kernels)."""
    norm = GroupNorm(4, 8).to(torch.bfloat16)
    torch.nn.init.normal_(norm.weight), torch.nn.init.normal_(norm.bias)
    x = torch.randn(3, 8, size, size).to(torch.bfloat16)
    cotangent = torch.randn_like(x)
    x_last = x.to(memory_format=torch.channels_last).requires_grad_(True)
    out = norm(x_last)
    assert out.is_contiguous(memory_format=torch.channels_last)
    grads = torch.autograd.grad(out, (x_last, norm.weight, norm.bias), cotangent.to(memory_format=torch.channels_last))
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    x_ref = x.clone().requires_grad_(True)
    ref = torch.nn.functional.group_norm(x_ref, 4, norm.weight, norm.bias)
    ref_grads = torch.autograd.grad(ref, (x_ref, norm.weight, norm.bias), cotangent)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, rtol=0, atol=0)


def test_position_embedding_closed_form():
    dim, gh, gw = 16, 3, 5
    emb = sincos_2d(gh, gw, dim)
    assert emb.shape == (gh * gw, dim)
    quarter = dim // 4
    for r in range(gh):
        for c in range(gw):
            row = emb[r * gw + c]
            for i in range(quarter):
                w = 1 / 10_000 ** (i / quarter)
                expect = [math.sin(r * w), math.cos(r * w), math.sin(c * w), math.cos(c * w)]
                got = [row[i], row[quarter + i], row[2 * quarter + i], row[3 * quarter + i]]
                assert all(abs(a - float(b)) < 1e-6 for a, b in zip(expect, got))
    assert sincos_2d(4, 4, dim).shape == (16, dim)  # rebuilt for another resolution


def test_qk_norm_present_and_normalising():
    net = DiT(DiTConfig(hidden_size=32, depth=1, num_heads=2), 1, 8, 0)
    attn = net.blocks[0].attn
    assert isinstance(attn.q_norm, RMSNorm) and isinstance(attn.k_norm, RMSNorm)
    q = torch.randn(2, 2, 5, 16) * 40
    normed = attn.q_norm(q)
    assert torch.allclose(normed.pow(2).mean(-1), torch.ones(2, 2, 5), atol=1e-3)
    with torch.no_grad():
        attn.q_norm.weight.fill_(3.0)
    assert torch.allclose(attn.q_norm(q).pow(2).mean(-1), torch.full((2, 2, 5), 9.0), atol=1e-2)
    assert isinstance(Attention(8, 2).q_norm, torch.nn.Identity)  # the UNet's attention has none


def test_bf16_cpu_attention_matches_sdpa():
    from genkit.nets.layers import attention

    q, k, v = (torch.randn(2, 2, 10, 16) for _ in range(3))
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(attention(q.bfloat16(), k.bfloat16(), v.bfloat16()).float(), reference, atol=5e-2)


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_few_steps_lower_the_loss_and_nets_swap_in_one_config(name):
    cfg = load_config(None, [f"model.name={name}", "data.image_size=8", "model.num_classes=2",
                             "model.unet.channel_mult=[1,2]", "model.unet.attention_resolutions=[4]",
                             "model.dit.hidden_size=32", "model.dit.depth=2", "model.dit.num_heads=2"])
    torch.manual_seed(0)
    net, method = build_net(cfg), build_method(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    x0 = torch.rand(8, 1, 8, 8).round() * 2 - 1
    y = torch.arange(8) % 2

    def loss_on_fixed_noise():
        with torch.no_grad():
            return method.loss(net, x0, y, torch.Generator().manual_seed(123)).item()

    before = loss_on_fixed_noise()
    for step in range(30):
        loss = method.loss(net, x0, y, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss_on_fixed_noise() < 0.8 * before
