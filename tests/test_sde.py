"""Score-SDE paths against Song et al.'s closed forms and Monte Carlo; samplers and likelihood
against exact scores."""
import math

import pytest
import torch

from genkit.config import MethodConfig
from genkit.methods.sde import SDEConfig
from genkit.likelihood import bits_per_dim, dequantize, estimate_log_likelihood, log_likelihood, smoothing_std
from genkit.methods import ScoreSDE, make_betas
from genkit.oracles import GaussianMixture, sliced_wasserstein
from genkit.paths import DiscreteVPPath, FlowPath, GaussianPath, SubVPPath, VEPath, VPPath
from genkit.samplers import SAMPLERS, SCHEDULES, BatchNoise, Denoiser
from tests.conftest import default_grid

PATHS = {"vp": VPPath(), "subvp": SubVPPath(), "ve": VEPath(sigma_max=5.0)}
T = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)


@pytest.mark.parametrize("kind", list(PATHS))
def test_derivatives_match_autograd(kind):
    path, t = PATHS[kind], T.clone().requires_grad_(True)
    for value, derivative in [(path.alpha, path.d_alpha), (path.sigma, path.d_sigma)]:
        out = value(t)
        grad = torch.autograd.grad(out.sum(), t)[0] if out.requires_grad else torch.zeros_like(T)  # constant
        assert torch.allclose(grad, derivative(T), rtol=1e-10, atol=1e-12)


def test_drift_and_diffusion_are_song_et_al_closed_forms():
    vp, subvp, ve = PATHS["vp"], PATHS["subvp"], PATHS["ve"]
    beta = 0.1 + (20 - 0.1) * T
    integral = 0.1 * T + 0.5 * (20 - 0.1) * T**2
    assert torch.allclose(vp.drift_coef(T), -beta / 2) and torch.allclose(subvp.drift_coef(T), -beta / 2)
    assert torch.allclose(vp.diffusion_sq(T), beta)
    assert torch.allclose(subvp.diffusion_sq(T), beta * (1 - torch.exp(-2 * integral)))
    assert torch.allclose(ve.drift_coef(T), torch.zeros_like(T))
    assert torch.allclose(ve.diffusion_sq(T), ve.sigma(T) ** 2 * 2 * math.log(5.0 / 0.01))
    assert torch.all(subvp.sigma(T) < vp.sigma(T))  # sub-VP's variance lies below VP's
    for path in (vp, subvp, ve):  # the closed forms agree with the general g^2 = (sigma^2)' - 2 f sigma^2
        assert torch.allclose(path.diffusion_sq(T), GaussianPath.diffusion_sq(path, T), rtol=1e-10)
        assert torch.allclose(path.drift_coef(T), GaussianPath.drift_coef(path, T), rtol=1e-10)


@pytest.mark.parametrize("kind", list(PATHS))
def test_marginals_match_monte_carlo_of_the_forward_sde(kind):
    """Euler-Maruyama on dx = f x dt + g dW from x(0) ~ N(x0, sigma(0)^2) lands on N(alpha x0, sigma^2)."""
    path, n, steps = PATHS[kind], 20_000, 2000
    g = torch.Generator().manual_seed(0)
    x0 = 0.7
    x = x0 + float(path.sigma(torch.zeros(1, dtype=torch.float64))) * torch.randn(n, generator=g, dtype=torch.float64)
    times = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    checks = {steps // 2: None, steps: None}
    for i in range(steps):
        t, dt = times[i:i + 1], float(times[i + 1] - times[i])
        x = x + float(path.drift_coef(t)) * x * dt + math.sqrt(float(path.diffusion_sq(t)) * dt) * torch.randn(
            n, generator=g, dtype=torch.float64)
        if i + 1 in checks:
            checks[i + 1] = x.clone()
    for i, xs in checks.items():
        t = times[i:i + 1]
        a, s = float(path.alpha(t)), float(path.sigma(t))
        assert xs.mean() == pytest.approx(a * x0, abs=4 * s / math.sqrt(n) + 0.01 * s)
        assert xs.std() == pytest.approx(s, rel=0.03)


MIXTURE = GaussianMixture(torch.tensor([[-0.6, 0.3], [0.5, 0.5], [0.1, -0.7]]), std=0.15)
N = 3000
DATA = MIXTURE.sample(N, torch.Generator().manual_seed(1)).float()
FLOOR = sliced_wasserstein(MIXTURE.sample(N, torch.Generator().manual_seed(9)).float(), DATA)


def draw(path, name, steps, **options):
    denoiser = Denoiser(MIXTURE.as_net(path), path, "eps")
    ts, fitted = default_grid(name, MIXTURE.as_net(path), path, "eps", steps, 2)
    x = torch.randn(N, 2, generator=torch.Generator().manual_seed(2)) * path.prior_std(float(ts[0]))
    return SAMPLERS[name](denoiser, x, ts, BatchNoise(3), **{**fitted, **options}), denoiser.nfe


@pytest.mark.parametrize("kind", list(PATHS))
@pytest.mark.parametrize("name, steps, options", [
    ("em", 400, {}),
    ("pc", 200, {"predictor": "reverse_diffusion", "snr": 0.1}),
    ("pc", 200, {"predictor": "ancestral", "snr": 0.1}),
    ("ode", 10, {}),
])
def test_samplers_on_the_exact_score_reproduce_the_mixture(kind, name, steps, options):
    out, nfe = draw(PATHS[kind], name, steps, **options)
    assert torch.allclose(out.mean(0), DATA.mean(0), atol=0.03)
    assert torch.allclose(torch.cov(out.T), torch.cov(DATA.T), atol=0.03)
    assert sliced_wasserstein(out, DATA) < (1.5 if name == "ode" else 2.0) * FLOOR  # 3000 noisy draws
    if name == "pc":
        assert nfe == 2 * steps  # corrector + predictor per step; the last predictor is the denoising jump


def test_em_error_falls_with_steps():
    errors = [sliced_wasserstein(draw(PATHS["vp"], "em", steps)[0], DATA) for steps in (5, 20, 400)]
    assert errors[0] > errors[1] > errors[2]


def test_pc_rejects_unknown_predictor_and_negative_counts():
    with pytest.raises(ValueError, match="predictor"):
        draw(PATHS["vp"], "pc", 5, predictor="magic")
    with pytest.raises(ValueError, match="n_corrector"):
        draw(PATHS["vp"], "pc", 5, n_corrector=-5)


GAUSS_MEAN, GAUSS_STD, DIM = 0.3, 0.4, 4


def exact_log_density(path, x, t_min):
    """log N(x; alpha mu, alpha^2 s^2 + sigma^2) at t_min: the density the ODE transports."""
    t = torch.tensor([t_min], dtype=torch.float64)
    a, s = float(path.alpha(t)), float(path.sigma(t))
    var = a**2 * GAUSS_STD**2 + s**2
    return torch.distributions.Normal(a * GAUSS_MEAN, math.sqrt(var)).log_prob(x).sum(1)


def true_prior(path):
    """The exact marginal at t = 1, so that only the solver's error remains."""
    return lambda x: exact_log_density(path, x, 1.0)


@pytest.mark.parametrize("kind", list(PATHS))
def test_exact_divergence_likelihood_matches_closed_form(kind):
    path = PATHS[kind]
    data = GaussianMixture(torch.full((1, DIM), GAUSS_MEAN), GAUSS_STD)
    x = data.sample(6, torch.Generator().manual_seed(0))
    denoiser = Denoiser(data.as_net(path), path, "eps")
    logp = log_likelihood(denoiser, x, estimator="exact", t_min=1e-5, prior_logp=true_prior(path))
    assert torch.allclose(logp, exact_log_density(path, x, 1e-5), atol=2e-3)
    assert denoiser.nfe > 10


def test_hutchinson_is_unbiased_and_its_default_prior_is_close():
    path = PATHS["vp"]
    data = GaussianMixture(torch.full((1, DIM), GAUSS_MEAN), GAUSS_STD)
    x = data.sample(1, torch.Generator().manual_seed(0)).repeat(200, 1)  # one point, 200 probes
    denoiser = Denoiser(data.as_net(path), path, "eps")
    g = torch.Generator().manual_seed(1)
    for probe in ("rademacher", "gaussian"):
        logp = log_likelihood(denoiser, x, estimator="hutchinson", probes=1, probe=probe, rtol=1e-4, atol=1e-4,
                              generator=g)
        spread = logp.std() / math.sqrt(len(logp))
        assert abs(logp.mean() - exact_log_density(path, x[:1], 1e-5)) < 4 * spread + 1e-2
    with pytest.raises(ValueError, match="estimator"):
        log_likelihood(denoiser, x, estimator="magic")


@pytest.mark.parametrize("kind", ["vp", "subvp"])
def test_the_default_likelihood_call_is_accurate_per_point_on_a_mixture(kind):
    """Regression: the default call (one Hutchinson probe) erred by up to 0.42 bits/dim on single
    points of a 2-D mixture; in few dimensions it now takes the exact divergence."""
    path = PATHS[kind]
    data = GaussianMixture(torch.tensor([[-0.6, 0.3], [0.5, 0.5], [0.1, -0.7]]), std=0.15)
    x = data.sample(16, torch.Generator().manual_seed(0))
    log_p = log_likelihood(Denoiser(data.as_net(path), path, "eps"), x)
    error_bits = (log_p - data.log_prob(x)).abs() / (2 * math.log(2))
    assert error_bits.max() < 0.01


def test_several_probes_share_one_solve_and_report_their_standard_error():
    path = PATHS["vp"]
    data = GaussianMixture.random(1, 80, 0.3, seed=4, anisotropy=4.0)  # beyond EXACT_MAX_DIMS: hutchinson
    x = data.sample(3, torch.Generator().manual_seed(0))
    denoiser = Denoiser(data.as_net(path), path, "eps")
    solve = dict(rtol=1e-4, atol=1e-4, generator=torch.Generator().manual_seed(2))
    one = estimate_log_likelihood(denoiser, x, probes=1, **solve)
    assert one.stderr.abs().max() == 0  # one probe: no spread to report
    several = estimate_log_likelihood(denoiser, x, **solve)  # PROBES probes along one solve
    exact = estimate_log_likelihood(denoiser, x, estimator="exact", rtol=1e-4, atol=1e-4).log_p
    assert (several.stderr > 0).all()
    assert ((several.log_p - exact).abs() < 4 * several.stderr + 1e-3).all()
    assert smoothing_std(VEPath(sigma_min=0.01), 1e-5) == pytest.approx(0.01, rel=1e-3)


def test_bits_per_dim_offset_for_8_bit_data():
    """A uniform density over [-1, 1 + 1/127.5)^D is 8 bits/dim of the 256 levels."""
    d = 10
    log_p = torch.tensor([-d * math.log(256 / 127.5)])
    assert bits_per_dim(log_p, d).item() == pytest.approx(8.0)
    x = dequantize(torch.tensor([[0, 255]], dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert -1 <= x.min() < -1 + 1 / 127.5 and 1 <= x.max() < 1 + 1 / 127.5


@pytest.mark.parametrize("weighting", [False, True])
@pytest.mark.parametrize("kind", ["vp", "subvp", "ve"])
def test_sde_loss_draws_times_in_range_and_is_finite(kind, weighting):
    cfg = MethodConfig(name="sde", sde=SDEConfig(kind=kind, likelihood_weighting=weighting))
    method = ScoreSDE(cfg)
    t, w = method.sample_time(1000, torch.Generator().manual_seed(0))
    assert t.min() >= cfg.sde.t_eps and t.max() <= 1 and (w is None) != weighting
    if weighting:  # g^2 / sigma^2 in eps space
        assert torch.allclose(w, method.path.diffusion_sq(t) / method.path.sigma(t) ** 2)
    loss = method.loss(lambda x, t, y: torch.zeros_like(x), torch.randn(8, 1, 4, 4), None, torch.Generator())
    assert torch.isfinite(loss)


def test_pc_langevin_scale_is_the_papers_on_the_cosine_schedule():
    """Regression: the corrector's step was scaled by (alpha_s / alpha_t)^2 >= 1 instead of
    algorithm 5's alpha_i = (alpha_t / alpha_s)^2 <= 1; on cosine's first step that is about 1e5
    and pc diverged (sliced W2 1365 at 5 steps)."""
    path = DiscreteVPPath(make_betas("cosine", 1000))
    denoiser = Denoiser(MIXTURE.as_net(path, "v"), path, "v")
    x = torch.randn(N, 2, generator=torch.Generator().manual_seed(2))
    out = SAMPLERS["pc"](denoiser, x, SCHEDULES["uniform"](path, 5), BatchNoise(3))
    assert sliced_wasserstein(out, DATA) < 0.15


@pytest.mark.parametrize("name, steps, options", [("em", 400, {}), ("pc", 200, {"snr": 0.1}),
                                                  ("pc", 200, {"predictor": "ancestral", "snr": 0.1})])
@pytest.mark.parametrize("where", ["flow", "zero_snr"])
def test_sde_samplers_start_where_the_reverse_sde_is_singular(name, steps, options, where):
    """alpha(t = 1) = 0 on a flow and under zero terminal SNR: the first step is the exact
    posterior step, the rest the reverse SDE; the mixture comes out."""
    from genkit.methods.ddpm import rescale_zero_terminal_snr

    if where == "flow":
        path, kind = FlowPath(), "velocity"
    else:
        path, kind = DiscreteVPPath(rescale_zero_terminal_snr(make_betas("linear", 1000))), "v"
    denoiser = Denoiser(MIXTURE.as_net(path, kind), path, kind)
    x = torch.randn(N, 2, generator=torch.Generator().manual_seed(2))
    out = SAMPLERS[name](denoiser, x, SCHEDULES["uniform"](path, steps), BatchNoise(3), **options)
    assert torch.isfinite(out).all()
    assert sliced_wasserstein(out, DATA) < 2.0 * FLOOR
