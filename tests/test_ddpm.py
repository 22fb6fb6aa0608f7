import pytest
import torch
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr as diffusers_rescale

from genkit.config import ConfigError, MethodConfig, load_config
from genkit.methods.ddpm import DDPM, DDPMConfig, make_betas, rescale_zero_terminal_snr, snr_weight
from genkit.oracles import GaussianMixture, sliced_wasserstein
from genkit.paths import DiscreteVPPath
from genkit.samplers import SAMPLERS, SCHEDULES, Denoiser


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_zero_terminal_snr_matches_diffusers_and_stays_finite(schedule):
    betas = make_betas(schedule, 1000, 0.00085, 0.012)
    ours = rescale_zero_terminal_snr(betas)
    assert torch.allclose(ours, diffusers_rescale(betas.float()).double(), atol=1e-5)
    assert ours[-1] == 1 and torch.cumprod(1 - ours, 0)[-1] == 0
    path = DiscreteVPPath(ours)
    t = torch.linspace(0, 1, 5001, dtype=torch.float64)
    for fn in (path.alpha, path.sigma, path.d_alpha, path.log_snr):
        assert torch.isfinite(fn(t[1:])).all()
    for schedule_fn in SCHEDULES.values():
        assert torch.isfinite(schedule_fn(path, 10)).all()


def test_zero_terminal_snr_samples_with_v_prediction():
    path = DiscreteVPPath(rescale_zero_terminal_snr(make_betas("linear", 1000)))
    gmm = GaussianMixture(torch.tensor([[-0.5, 0.5], [0.5, -0.2]]), std=0.2)

    def v_net(x, t, y=None):  # the exact v = alpha eps - sigma x0
        eps = gmm.eps(x, t.double(), path)
        tt = t.double()
        x0 = (x.double() - path.sigma(tt)[:, None] * eps) / path.alpha(tt)[:, None]
        return path.from_x0_eps(x0, eps, tt, "v").float()

    data = gmm.sample(2000, torch.Generator().manual_seed(0)).float()
    x = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
    for name in ("ddim", "dpmpp_2m"):
        out = SAMPLERS[name](Denoiser(v_net, path, "v"), x, SCHEDULES["uniform"](path, 50))
        assert torch.isfinite(out).all() and sliced_wasserstein(out, data) < 0.05


def test_eps_prediction_refused_at_zero_terminal_snr():
    with pytest.raises(ConfigError, match="use v or x0"):
        load_config(None, ["method.ddpm.zero_terminal_snr=true"])


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("weighting, x0_weight", [("min_snr", lambda snr: snr.clamp(max=5.0)),
                                                  ("trunc_snr", lambda snr: snr.clamp(min=1.0))])
def test_weightings_agree_across_prediction_spaces(prediction, weighting, x0_weight):
    """A weighted loss in any prediction space equals the same x0-space weight times the x0 error."""
    path = DiscreteVPPath(make_betas("linear", 1000))
    g = torch.Generator().manual_seed(0)
    t = torch.rand(16, generator=g, dtype=torch.float64) * 0.98 + 0.01
    x0, eps = torch.randn(16, 8, generator=g, dtype=torch.float64), torch.randn(16, 8, generator=g, dtype=torch.float64)
    x_t = path.noise(x0, eps, t)
    x0_hat = x0 + 0.1 * torch.randn(16, 8, generator=g, dtype=torch.float64)
    eps_hat = (x_t - path.alpha(t)[:, None] * x0_hat) / path.sigma(t)[:, None]
    err = (path.from_x0_eps(x0_hat, eps_hat, t, prediction) - path.from_x0_eps(x0, eps, t, prediction)).pow(2).mean(1)
    snr = torch.exp(path.log_snr(t))
    weighted = snr_weight(snr, prediction, weighting, 5.0) * err
    assert torch.allclose(weighted, x0_weight(snr) * (x0_hat - x0).pow(2).mean(1), rtol=1e-8)


def test_weighted_loss_runs():
    method = DDPM(MethodConfig(ddpm=DDPMConfig(loss_weighting="min_snr"), prediction="v"), num_classes=0)

    def net(x, t, y):
        return torch.zeros_like(x)

    loss = method.loss(net, torch.randn(4, 1, 8, 8), None, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss > 0
