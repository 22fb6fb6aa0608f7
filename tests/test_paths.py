import pytest
import torch
from diffusers import DDPMScheduler

from genkit.methods import make_betas
from genkit.paths import PREDICTIONS, DiscreteVPPath


@pytest.fixture(scope="module")
def path():
    return DiscreteVPPath(make_betas("linear", 1000))


@pytest.mark.parametrize("ours, theirs", [("linear", "linear"), ("scaled_linear", "scaled_linear"),
                                          ("cosine", "squaredcos_cap_v2"), ("sigmoid", "sigmoid")])
def test_betas_match_diffusers(ours, theirs):
    reference = DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs).betas.double()
    assert torch.allclose(make_betas(ours, 1000), reference, atol=1e-8)


def test_knots_are_alphas_cumprod(path):
    k = torch.arange(1000)
    assert torch.allclose(path.alpha(path.timestep_to_t(k)) ** 2, path.alphas_cumprod, atol=1e-12)
    assert path.alpha(torch.zeros(1)).item() == 1 and path.sigma(torch.zeros(1)).item() == 0


def test_derivatives_match_finite_differences(path):
    t = torch.rand(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    h = 1e-7
    assert torch.allclose(path.d_alpha(t), (path.alpha(t + h) - path.alpha(t - h)) / (2 * h), rtol=1e-4, atol=1e-6)
    assert torch.allclose(path.d_sigma(t), (path.sigma(t + h) - path.sigma(t - h)) / (2 * h), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_prediction_conversions_round_trip(path, kind):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64), torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0.003, 0.1, 0.35, 0.5, 0.8, 0.97], dtype=torch.float64)
    x_t = path.noise(x0, eps, t)
    pred = path.from_x0_eps(x0, eps, t, kind)
    x0_back, eps_back = path.to_x0_eps(pred, x_t, t, kind)
    assert torch.allclose(x0_back, x0, atol=1e-8) and torch.allclose(eps_back, eps, atol=1e-8)


def test_timestep_spacings_match_diffusers(path):
    from diffusers import DDIMScheduler

    for spacing in ["trailing", "leading", "linspace"]:
        for steps in [10, 50, 1000]:
            ref = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
            ref.set_timesteps(steps)
            ks = torch.round(path.timesteps(steps, spacing)[:-1] * 1000) - 1
            assert ks.long().tolist() == ref.timesteps.tolist(), (spacing, steps)
