"""The autoencoder (KL against its closed form, shapes per channel count), reconstruction metrics
against their definitions, latent normalisation and the encoding cache, and latent models from
the command line through `genkit.load`."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

import genkit
from genkit.config import ConfigError, load_config
from genkit.evaluation.metrics import psnr, ssim
from genkit.latents import AUTOENCODER_DIR, LatentCodec, encode_dataset
from genkit.methods.vae import VAE, gaussian_kl
from genkit.nets import build_net
from tests.conftest import digit_overrides, run_script, tiny_overrides

TINY_VAE = ["model.name=vae", "method.name=vae", "sample.sampler=prior", "model.num_classes=0",
            "model.vae.block_out_channels=[32,32]", "model.vae.layers_per_block=1", "model.vae.mid_attention=false"]


def test_kl_matches_torch_distributions_closed_form():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    q = torch.distributions.Normal(mean.double(), (0.5 * logvar.double()).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean.double()), torch.ones_like(mean.double()))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    assert torch.allclose(gaussian_kl(mean, logvar).double(), expected, rtol=1e-5)
    assert gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0  # q = p


def test_vae_loss_is_distance_plus_weighted_kl_per_pixel(tiny_cfg):
    cfg = tiny_cfg(*TINY_VAE, "method.vae.kl_weight=0.5")
    net = build_net(cfg)
    x0 = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    loss = VAE(cfg.method).loss(net, x0, None, torch.Generator().manual_seed(2))
    eps = torch.randn(4, *net.latent_shape(16), generator=torch.Generator().manual_seed(2))
    recon, mean, logvar = net(x0, eps)
    expected = (recon - x0).square().mean() + 0.5 * gaussian_kl(mean, logvar).mean() / 256
    assert torch.allclose(loss, expected, rtol=1e-5)


@pytest.mark.parametrize("channels", [4, 8, 16])
def test_encode_decode_shapes_for_each_channel_count(tiny_cfg, channels):
    cfg = tiny_cfg(*TINY_VAE, f"model.vae.latent_channels={channels}", "model.vae.block_out_channels=[32,32,32]")
    net = build_net(cfg)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    mean, logvar = net.encode(x)
    assert mean.shape == logvar.shape == (2, channels, 4, 4) and net.latent_shape(16) == (channels, 4, 4)
    assert net.decode(mean).shape == (2, 1, 16, 16)


def test_psnr_and_ssim_against_their_definitions():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 1, 16, 16, generator=g)
    assert torch.isinf(psnr(a, a)).all() and torch.allclose(ssim(a, a), torch.ones(3, dtype=torch.float64))
    # a constant offset d: PSNR = -10 log10(d^2)
    assert torch.allclose(psnr(a * 0.5, a * 0.5 + 0.1), torch.full((3,), 20.0, dtype=torch.float64))
    # constant images a, b: no variance, so SSIM is the luminance term (2ab + C1) / (a^2 + b^2 + C1)
    x, y = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.7)
    c1 = 0.01**2
    assert math.isclose(float(ssim(x, y)), (2 * 0.2 * 0.7 + c1) / (0.2**2 + 0.7**2 + c1), rel_tol=1e-6)  # float32 inputs
    # noise lowers it, more noise lowers it more
    noisy = [ssim(a, (a + s * torch.randn(a.shape, generator=g)).clamp(0, 1)).mean() for s in (0.05, 0.3)]
    assert 1 > noisy[0] > noisy[1]


def test_normalisation_gives_latents_zero_mean_unit_std_and_round_trips(tiny_cfg, tmp_path):
    cfg = tiny_cfg(*TINY_VAE)
    codec = LatentCodec(cfg, build_net(cfg))
    images = torch.randint(0, 256, (40, 1, 16, 16), dtype=torch.uint8)
    raw = encode_dataset(codec, images, tmp_path / "cache", chunk=16, progress=False)
    codec.fit(raw)
    z = codec.encode(images.float() / 127.5 - 1)
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-3
    raw_again = z / codec.scale + codec.shift  # what decode feeds the decoder
    assert torch.allclose(raw_again, raw, atol=1e-5)


def test_encoding_cache_resumes_and_is_replaced_for_other_weights(tiny_cfg, tmp_path):
    cfg = tiny_cfg(*TINY_VAE)
    codec = LatentCodec(cfg, build_net(cfg))
    images = torch.randint(0, 256, (40, 1, 16, 16), dtype=torch.uint8)
    cache = tmp_path / "cache"
    first = encode_dataset(codec, images, cache, chunk=16, progress=False)
    assert sorted(p.name for p in cache.glob("chunk-*")) == ["chunk-00000.safetensors", "chunk-00001.safetensors",
                                                               "chunk-00002.safetensors"]
    (cache / "chunk-00001.safetensors").unlink()  # an encoding interrupted after the first chunk...
    (cache / "chunk-00002.safetensors").write_bytes(b"torn")  # ...or a damaged one
    assert torch.equal(encode_dataset(codec, images, cache, chunk=16, progress=False), first)
    with torch.no_grad():
        next(codec.net.parameters()).add_(1.0)  # other weights: the cache no longer applies
    assert not torch.equal(encode_dataset(codec, images, cache, chunk=16, progress=False), first)


def test_latent_config_errors_name_the_key(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match="data.latent_channels: latents need an autoencoder"):
        tiny_cfg("data.latent_channels=4")
    with pytest.raises(ConfigError, match="data.hflip: latents are encoded once"):
        tiny_cfg("data.autoencoder=runs/vae", "data.hflip=true", "method.name=flow")
    with pytest.raises(ConfigError, match="data.autoencoder: latents are learnt by the Gaussian-path methods"):
        tiny_cfg("data.autoencoder=runs/vae", "model.name=pixelcnn", "method.name=autoregressive",
                 "sample.sampler=cached")
    with pytest.raises(ConfigError, match="model.num_classes: an autoencoder is unconditional"):
        tiny_cfg(*TINY_VAE, "model.num_classes=4")
    with pytest.raises(ConfigError, match="not method.name=vae"):
        tiny_cfg(*TINY_VAE, "data.autoencoder=runs/vae")


@pytest.fixture(scope="module")
def trained_vae(imagefolder, tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "run"
    result = run_script("train.py", *tiny_overrides(imagefolder, out), *TINY_VAE, "train.max_steps=3")
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.mark.parametrize("net", [pytest.param("dit", marks=pytest.mark.slow), pytest.param("unet", marks=pytest.mark.slow)])
def test_latent_model_trains_samples_resumes_and_loads_without_its_autoencoder_run(imagefolder, trained_vae,
                                                                                   tmp_path, net):
    vae = tmp_path / "vae"
    shutil.copytree(trained_vae, vae)
    out = tmp_path / "latent"
    latent = [*tiny_overrides(imagefolder, out), f"model.name={net}", "method.name=flow", f"data.autoencoder={vae}",
              "model.dit.patch_size=2", "model.unet.attention_resolutions=[4]", "sample.sampler=heun"]
    result = run_script("train.py", *latent)
    assert result.returncode == 0, result.stderr[-2000:]
    cfg = load_config(out / "checkpoints" / "step-000004" / "config.yaml")
    assert (cfg.data.latent_channels, cfg.data.latent_size) == (4, 8)  # read off the autoencoder
    stats = json.loads((out / "checkpoints" / "step-000004" / AUTOENCODER_DIR / "latents.json").read_text())
    assert stats["scale"] > 0
    chunks = {p: p.stat().st_mtime_ns for p in (out / "latents").glob("chunk-*")}
    result = run_script("train.py", *latent, "train.resume=latest", "train.max_steps=6")
    assert result.returncode == 0, result.stderr[-2000:]
    assert chunks and {p: p.stat().st_mtime_ns for p in (out / "latents").glob("chunk-*")} == chunks  # reused

    shutil.rmtree(vae)  # the latent run carries its autoencoder
    model = genkit.load(out)
    drawn = model.sample(5, seed=3, steps=2, progress=False)
    assert drawn.images.shape == (5, 1, 16, 16) and drawn.noise.shape == (5, 4, 8, 8)
    assert 0 <= drawn.images.min() and drawn.images.max() <= 1
    assert torch.allclose(model.sample(2, seed=3, steps=2, progress=False).images, drawn.images[:2], atol=1e-5)
    png = tmp_path / "grid.png"
    result = run_script("sample.py", "--checkpoint", str(out), "--num", "4", "--steps", "2", "--out", str(png))
    assert result.returncode == 0 and png.is_file(), result.stderr[-2000:]
    with pytest.raises(genkit.ArgumentError, match="latent model's density is over latents"):
        model.bits_per_dim(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_latent_run_refuses_an_autoencoder_that_does_not_fit(imagefolder, trained_vae, tmp_path):
    base = [*tiny_overrides(imagefolder, tmp_path / "latent"), "model.name=dit", "method.name=flow",
            f"data.autoencoder={trained_vae}", "model.dit.patch_size=2"]
    for extra, message in [(["data.latent_channels=8"], "data.latent_channels: 8, but"),
                           (["data.image_size=32"], "was trained on 1-channel 16 px images"),
                           ([f"data.autoencoder={tmp_path}"], "data.autoencoder: ")]:
        result = run_script("train.py", *base, *extra)
        assert result.returncode == 2, result.stderr[-2000:]
        assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_autoencoder_eval_reports_reconstruction_metrics(digits, tmp_path):
    out = tmp_path / "vae"
    result = run_script("train.py", *digit_overrides(digits, out), *TINY_VAE, "model.num_classes=0",
                        "train.max_steps=2")
    assert result.returncode == 0, result.stderr[-2000:]
    report = tmp_path / "eval.json"
    result = run_script("eval.py", "--checkpoint", str(out), "--num", "20", "--json", str(report))
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads(report.read_text())
    assert scores["images"] == 20 and scores["psnr"] > 0 and -1 <= scores["ssim"] <= 1 and scores["rfid"] >= 0
    assert scores["real_data_floor"]["fid"] < scores["rfid"]  # two training steps reconstruct nothing like digits
    result = run_script("eval.py", "--checkpoint", str(out), "--steps", "5")
    assert result.returncode == 2 and "--steps: does not apply to an autoencoder" in result.stderr
    model = genkit.load(out)
    assert model.sample(3, seed=0, progress=False).images.shape == (3, 1, 32, 32)  # decoded prior draws
    with pytest.raises(genkit.ArgumentError, match="exports hold pixel-space denoisers"):
        genkit.save_pretrained(model, tmp_path / "export")
