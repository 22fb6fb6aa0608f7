"""Training times drawn by their log-SNR (`LogSNRNormal`): the same noise levels on every path."""
import math

import pytest
import torch

from genkit.config import ConfigError, MethodConfig, load_config
from genkit.methods import ScoreSDE, make_betas
from genkit.methods.ddpm import DDPM, DDPMConfig
from genkit.methods.sde import SDEConfig
from genkit.methods.time_densities import LogitNormal, LogSNRNormal
from genkit.paths import DiscreteVPPath, FlowPath, SubVPPath, VEPath, VPPath

N = 200_000


def moments(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.std())


@pytest.mark.parametrize("m, s", [(0.0, 1.0), (-0.5, 0.8)])
def test_a_logit_normal_flow_sees_the_log_snr_normal_it_is_named_for(m, s):
    """lambda = -2 logit t on the flow path, so logit-normal(m, s) times are N(-2m, 2s) log-SNRs."""
    t = LogitNormal(m, s).sample(N, torch.Generator().manual_seed(0)).clamp(1e-12, 1 - 1e-12)
    mean, std = moments(FlowPath().log_snr(t))
    assert mean == pytest.approx(-2 * m, abs=0.02) and std == pytest.approx(2 * s, rel=0.01)
    # and LogSNRNormal(-2m, 2s) draws those times on the flow path
    drawn = LogSNRNormal(-2 * m, 2 * s).times(FlowPath(), N, torch.Generator().manual_seed(1))
    assert moments(torch.logit(drawn)) == pytest.approx((m, s), abs=0.01)


@pytest.mark.parametrize("path", [VPPath(), SubVPPath(), VEPath()], ids=["vp", "subvp", "ve"])
def test_continuous_times_carry_the_log_snrs_drawn(path):
    density = LogSNRNormal(0.5, 1.5)
    t = density.times(path, N, torch.Generator().manual_seed(0), t_min=1e-5)
    assert t.dtype == torch.float64 and bool(((t >= 1e-5) & (t <= 1)).all())
    lam = path.log_snr(t)
    assert moments(lam) == pytest.approx((0.5, 1.5), abs=0.01)
    # the inverse is exact, not only in distribution: the same draws give the same log-SNRs
    again = torch.Generator().manual_seed(0)
    expected = 0.5 + 1.5 * torch.randn(N, generator=again, dtype=torch.float64)
    assert torch.allclose(lam, expected, atol=1e-6)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_discrete_steps_follow_the_density_over_log_snr(schedule):
    path = DiscreteVPPath(make_betas(schedule, 1000))
    lam = path.log_snr(path.timestep_to_t(torch.arange(1000)))
    probs = LogSNRNormal(0.0, 2.0).step_probs(lam)
    assert probs.shape == (1000,) and bool((probs >= 0).all()) and float(probs.sum()) == pytest.approx(1, abs=1e-12)
    # each step's probability is the mass between its midpoints: the expected log-SNR is the density's
    mean = float((probs * lam).sum())
    std = float((probs * (lam - mean) ** 2).sum().sqrt())
    assert mean == pytest.approx(0.0, abs=0.02) and std == pytest.approx(2.0, rel=0.01)
    # far from the density's mass a step is almost never drawn, where uniform draws spend a share
    # of the chain (the linear schedule: 11% of its steps lie below lambda = -8)
    assert float(probs[lam < -8].sum()) < 1e-4
    if schedule == "linear":
        assert float((lam < -8).double().mean()) > 0.1


def test_ddpm_draws_steps_by_log_snr_and_keeps_uniform_by_default():
    g = torch.Generator().manual_seed(0)
    uniform = DDPM(MethodConfig(ddpm=DDPMConfig(), prediction="v"))
    t, weight = uniform.sample_time(N, g)
    assert weight is None and float(t.mean()) == pytest.approx(0.5005, abs=0.01)
    method = DDPM(MethodConfig(ddpm=DDPMConfig(timestep_density="log_snr_normal", log_snr_mean=1.0,
                                               log_snr_std=1.5), prediction="v"))
    t, _ = method.sample_time(N, g)
    steps = (t * 1000).round() - 1
    assert torch.allclose(t, (steps + 1) / 1000) and bool(((steps >= 0) & (steps < 1000)).all())
    assert moments(method.path.log_snr(t)) == pytest.approx((1.0, 1.5), abs=0.03)
    loss = method.loss(lambda x, t, y: torch.zeros_like(x), torch.randn(4, 1, 8, 8), None, g)
    assert torch.isfinite(loss) and loss > 0


def test_score_sde_draws_times_by_log_snr():
    cfg = MethodConfig(name="sde", sde=SDEConfig(kind="vp", time_density="log_snr_normal", log_snr_mean=-1.0))
    t, _ = ScoreSDE(cfg).sample_time(N, torch.Generator().manual_seed(0))
    assert moments(ScoreSDE(cfg).path.log_snr(t)) == pytest.approx((-1.0, 2.0), abs=0.02)


@pytest.mark.parametrize("recipe, override, key", [
    ("ddpm_unet_mnist", "method.ddpm.timestep_density=lognormal", "method.ddpm.timestep_density"),
    ("ddpm_unet_mnist", "method.ddpm.log_snr_std=0", "method.ddpm.log_snr_std"),
    ("sde_vp_unet_mnist", "method.sde.time_density=lognormal", "method.sde.time_density"),
    ("sde_vp_unet_mnist", "method.sde.log_snr_std=-1", "method.sde.log_snr_std"),
])
def test_density_config_is_checked(recipe, override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(f"configs/{recipe}.yaml", [override])


def test_step_probs_match_a_monte_carlo_of_the_density():
    """The bins are the density's own mass: draw lambda, snap each to the nearest step's log-SNR."""
    path = DiscreteVPPath(make_betas("linear", 200))
    lam = path.log_snr(path.timestep_to_t(torch.arange(200)))
    density = LogSNRNormal(-1.0, 2.5)
    draws = -1.0 + 2.5 * torch.randn(N, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mids = (lam[1:] + lam[:-1]) / 2  # decreasing, so their negatives increase
    nearest = torch.bucketize(-draws, -mids)
    empirical = torch.bincount(nearest, minlength=200).double() / N
    assert (empirical - density.step_probs(lam)).abs().max() < 4 * math.sqrt(0.02 / N)
