"""Every sampler, driven by the exact denoiser of a Gaussian mixture, reproduces the data."""
import functools
import math

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from genkit.methods import make_betas
from genkit.oracles import GaussianMixture, sliced_wasserstein
from genkit.paths import DiscreteVPPath
from genkit.samplers import SAMPLERS, SCHEDULES, BatchNoise, Denoiser, DiffusersSampler
from genkit.samplers.base import FIRST_STEP_RULES
from tests.conftest import default_grid

N = 3000
PATH = DiscreteVPPath(make_betas("linear", 1000))
GMM = GaussianMixture(torch.tensor([[-0.6, 0.3], [0.5, 0.5], [0.1, -0.7]]), std=0.15)
DATA = GMM.sample(N, torch.Generator().manual_seed(1)).float()
FLOOR = sliced_wasserstein(GMM.sample(N, torch.Generator().manual_seed(9)).float(), DATA)  # sampling noise alone


def run(name, steps, schedule=None, **kwargs):
    denoiser = Denoiser(GMM.as_net(PATH), PATH, "eps")
    ts, options = (SCHEDULES[schedule](PATH, steps), {}) if schedule else \
        default_grid(name, GMM.as_net(PATH), PATH, "eps", steps, 2)
    x = torch.randn(N, 2, generator=torch.Generator().manual_seed(2))
    return SAMPLERS[name](denoiser, x, ts, BatchNoise(3), **options, **kwargs), denoiser.nfe


def test_mixture_eps_is_the_exact_score():
    """E[eps | x_t] = -sigma * grad log p_t, checked against autograd of the closed-form density."""
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    t = torch.full((5,), 0.3, dtype=torch.float64)
    a, s = PATH.alpha(t)[:, None], PATH.sigma(t)[:, None]
    var = a**2 * GMM.std**2 + s**2
    comps = [torch.distributions.Normal(a * m, var.sqrt()).log_prob(x).sum(-1) for m in GMM.means]
    log_p = torch.logsumexp(torch.stack(comps) + torch.log(GMM.weights)[:, None], dim=0)
    score = torch.autograd.grad(log_p.sum(), x)[0]
    assert torch.allclose(GMM.eps(x.detach(), t, PATH), -s * score, atol=1e-10)


def test_anisotropic_mixture_eps_is_the_exact_score_and_its_draws_have_its_moments():
    """Full covariances and unequal weights: E[eps | x_t] against autograd of the marginal
    sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I); draws and log_prob against torch's
    MultivariateNormal."""
    gmm = GaussianMixture.random(3, 4, 0.3, seed=5, anisotropy=4.0, unequal_weights=True)
    assert not torch.allclose(gmm.weights, gmm.weights.mean().expand(3))
    covs = gmm.bases @ torch.diag_embed(gmm.variances) @ gmm.bases.transpose(1, 2)  # [K, D, D]
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    for t_ in (0.05, 0.4, 0.9):
        t = torch.full((6,), t_, dtype=torch.float64)
        a, s = float(PATH.alpha(t[:1])), float(PATH.sigma(t[:1]))
        comps = torch.distributions.MultivariateNormal(a * gmm.means, a**2 * covs + s**2 * torch.eye(4))
        log_p = torch.logsumexp(comps.log_prob(x[:, None, :]) + gmm.weights.log(), dim=1)
        score = torch.autograd.grad(log_p.sum(), x)[0]
        assert torch.allclose(gmm.eps(x.detach(), t, PATH), -s * score, atol=1e-9)
        assert torch.allclose(gmm.log_prob(x.detach(), t[:1], PATH), log_p.detach(), atol=1e-9)  # the marginal
    data = torch.distributions.MultivariateNormal(gmm.means, covs)
    expected = torch.logsumexp(data.log_prob(x.detach()[:, None, :]) + gmm.weights.log(), dim=1)
    assert torch.allclose(gmm.log_prob(x.detach()), expected, atol=1e-9)
    one = GaussianMixture(gmm.means[:1], variances=gmm.variances[:1], bases=gmm.bases[:1])
    draws = one.sample(200_000, torch.Generator().manual_seed(0))
    assert torch.allclose(torch.cov(draws.T), covs[0], atol=0.01)


@pytest.mark.parametrize("name, steps", [("ddpm", 250), ("ddim", 250), ("euler", 250), ("heun", 60),
                                         ("dpmpp_2m", 40), ("dpmpp_2m_pc", 40), ("ode", 20)])
def test_samplers_reproduce_mean_and_covariance(name, steps):
    out, _ = run(name, steps)
    assert torch.allclose(out.mean(0), DATA.mean(0), atol=0.03)
    assert torch.allclose(torch.cov(out.T), torch.cov(DATA.T), atol=0.03)
    assert sliced_wasserstein(out, DATA) < 1.5 * FLOOR


@functools.cache
def exact_ode_error() -> float:
    """The distance from the data set of the exact ODE's samples (500 log-SNR steps, the same
    starting noise as `run`): the metric's own noise."""
    return sliced_wasserstein(run("dpmpp_2m_pc", 500, schedule="log_snr")[0], DATA)


@pytest.mark.parametrize("name", ["ddim", "euler", "heun", "dpmpp_2m", "dpmpp_2m_pc"])
def test_error_falls_with_nfe(name):
    """Error falls with the step count until it reaches the metric's own noise."""
    errors = [sliced_wasserstein(run(name, steps)[0], DATA) for steps in (3, 10, 40)]
    exact = exact_ode_error()
    assert errors[0] > errors[1] > errors[2] or errors[2] < 1.05 * exact, (errors, exact)
    assert errors[0] > 2 * errors[2]


def test_ode_methods_and_nfe():
    out, nfe_rk4 = run("ode", 10, schedule="log_snr", method="rk4")
    assert nfe_rk4 == 9 * 4 + 1  # rk4 on the 10 positive grid points, then the denoising jump
    assert sliced_wasserstein(out, DATA) < 1.5 * FLOOR
    _, nfe_loose = run("ode", 10, rtol=1e-2, atol=1e-2)
    _, nfe_tight = run("ode", 10, rtol=1e-6, atol=1e-6)
    assert nfe_tight > nfe_loose


def test_schedules_are_descending_and_end_at_zero():
    for name, schedule in SCHEDULES.items():
        ts = schedule(PATH, 10)
        assert ts[0] <= 1 and ts[-1] == 0 and (ts[1:] < ts[:-1]).all(), name
        assert len(ts) == 11, name
    assert torch.equal(SCHEDULES["uniform"](PATH, 10), SCHEDULES["trailing"](PATH, 10))
    assert SCHEDULES["leading"](PATH, 10)[0] == 0.901  # diffusers' leading starts at step 900
    lam = PATH.log_snr(SCHEDULES["log_snr"](PATH, 10)[:-1])
    assert (lam[1:] - lam[:-1]).std() < 0.05 * (lam[1:] - lam[:-1]).mean()  # evenly spaced (up to the grid)


@pytest.mark.parametrize("make", [
    lambda: DDIMScheduler(clip_sample=False, timestep_spacing="trailing"),
    lambda: EulerDiscreteScheduler(timestep_spacing="trailing"),
    lambda: DPMSolverMultistepScheduler(),
], ids=["ddim", "euler", "dpm-solver"])
def test_diffusers_adapter_samples_the_mixture(make):
    denoiser = Denoiser(GMM.as_net(PATH), PATH, "eps")
    x = torch.randn(N, 2, generator=torch.Generator().manual_seed(2))
    out = DiffusersSampler(make())(denoiser, x, torch.zeros(51))
    assert denoiser.nfe == 50
    assert sliced_wasserstein(out, DATA) < 2 * FLOOR  # first-order schedulers at 50 steps


def test_diffusers_adapter_matches_genkit_ddim():
    denoiser = Denoiser(GMM.as_net(PATH), PATH, "eps")
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(2))
    theirs = DiffusersSampler(DDIMScheduler(clip_sample=False, timestep_spacing="trailing"))(denoiser, x, torch.zeros(11))
    ours = SAMPLERS["ddim"](denoiser, x, SCHEDULES["uniform"](PATH, 10))
    assert torch.allclose(theirs, ours, atol=1e-5)


def test_diffusers_adapter_rejects_another_schedule():
    from genkit.registry import ArgumentError

    denoiser = Denoiser(GMM.as_net(PATH), PATH, "eps")
    with pytest.raises(ArgumentError, match="scheduler: its beta schedule differs"):
        DiffusersSampler(DDIMScheduler(beta_schedule="scaled_linear"))(denoiser, torch.randn(4, 2), torch.zeros(3))


@pytest.mark.parametrize("steps", [1, 2, 5, 9, 10, 30])
def test_sigma_clock_grids_end_at_zero_and_match_their_paths_own_clocks(steps):
    """`flow` and `angle` space the noise level sigma / alpha by the flow's and the cosine
    schedule's clocks down to 0: on those paths they are uniform in t, and on any path every
    evaluation lies strictly between the start and t = 0 (none is spent at a nearly clean time)."""
    from genkit.paths import FlowPath

    flow_path = FlowPath()
    assert torch.allclose(SCHEDULES["flow"](flow_path, steps)[1:], torch.linspace(1, 0, steps + 1)[1:].double(),
                          atol=2e-3)
    cosine = DiscreteVPPath(make_betas("cosine", 1000))
    angles = SCHEDULES["angle"](cosine, steps)
    assert torch.allclose(angles[1:-1], torch.linspace(1, 0, steps + 1)[1:-1].double(), atol=0.02)
    for path in (PATH, cosine, flow_path):
        for name in ("flow", "angle", "auto"):
            ts = SCHEDULES[name](path, steps)
            assert len(ts) == steps + 1 and ts[-1] == 0 and (ts.diff() < 0).all(), (name, steps)
            if name != "auto" or steps < 10:  # the last evaluation's noise level sigma / alpha is about 1 / steps
                assert float(torch.exp(-0.5 * path.log_snr(ts[-2:-1]))) > 0.5 / steps, (name, steps)


def test_auto_grid_switches_to_capped_log_snr_at_ten_steps():
    from genkit.paths import FlowPath

    for path in (PATH, DiscreteVPPath(make_betas("cosine", 1000)), FlowPath()):
        assert torch.equal(SCHEDULES["auto"](path, 9), SCHEDULES["flow"](path, 9))
        ts = SCHEDULES["auto"](path, 10)
        lam = path.log_snr(ts[:-1])
        assert lam[0] >= -2 * math.log(80.0) - 0.05  # sigma / alpha capped at 80 (up to DDPM's discrete steps)
        assert (lam.diff() > 0).all()


def test_default_sampler_is_the_configs_and_runs_on_every_path():
    """The default, `fitted`, takes a fitted grid on every path; fitted once (`fit`), it samples the
    mixture to the floor in 10 evaluations on every path."""
    from genkit.config import SampleConfig
    from genkit.paths import FlowPath, VPPath
    from genkit.samplers import ADAPTIVE, DEFAULT_SAMPLER, AdaptiveGrid, fit

    for path, kind in [(PATH, "eps"), (DiscreteVPPath(make_betas("cosine", 1000)), "v"), (VPPath(), "eps"),
                       (FlowPath(), "velocity")]:
        name = SampleConfig().sampler
        assert name == DEFAULT_SAMPLER and path.default_schedule(SAMPLERS[name].extra["schedule"]) == ADAPTIVE
        draws = torch.randn(32, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        grid = fit(SAMPLERS, name, 10, 1.0, {}, AdaptiveGrid.calibrate(Denoiser(GMM.as_net(path, kind), path, kind), draws))
        assert grid.runs in {runs for runs, _ in SAMPLERS[name].extra["contenders"]} and len(grid.times) == 11
        denoiser = Denoiser(GMM.as_net(path, kind), path, kind)
        ts = torch.tensor(grid.times, dtype=torch.float64)
        x = torch.randn(N, 2, generator=torch.Generator().manual_seed(2)) * path.prior_std(float(ts[0]))
        out = SAMPLERS[grid.runs](denoiser, x, ts, BatchNoise(3), **grid.run_options)
        assert denoiser.nfe == 10 and sliced_wasserstein(out, DATA) < 2 * FLOOR, path  # 10 evaluations


def test_adaptive_grid_follows_the_datas_finest_scale():
    """The grid fitted by a pilot takes its last step near the data's own scale: within 3x of the
    component std of a tight mixture, and over 3x higher for a wide one (fixed grids end at the
    same level for both). One pilot serves every step count, each grid starting at the pilot's
    start and descending strictly to 0; a net whose estimate never moves gets even log-SNR steps."""
    from genkit.paths import FlowPath
    from genkit.samplers import AdaptiveGrid
    from genkit.samplers.adaptive import PILOT_STEPS

    path = FlowPath()
    pilot = torch.randn(32, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    means = torch.tensor([[-0.6, 0.3], [0.5, 0.5], [0.1, -0.7]])
    last = {}
    for std in (0.01, 0.3):
        mixture = GaussianMixture(means, std=std)
        grid = AdaptiveGrid.calibrate(Denoiser(mixture.as_net(path, "velocity"), path, "velocity"), pilot)
        assert grid.pilot_nfe == PILOT_STEPS
        for steps in (1, 5, 10, 20):
            ts = grid.grid(path, steps)
            assert len(ts) == steps + 1 and ts[0] == ts.max() and ts[-1] == 0 and (ts.diff() < 0).all()
        noise_level = torch.exp(-0.5 * path.log_snr(grid.grid(path, 10)[-2:-1]))  # sigma / alpha at the last step
        last[std] = float(noise_level)
    assert 0.3 * 0.01 < last[0.01] < 3 * 0.01 and last[0.3] > 3 * last[0.01], last
    constant = AdaptiveGrid.calibrate(Denoiser(lambda x, t, y=None: torch.zeros_like(x), path, "x0"), pilot)
    lam = path.log_snr(constant.grid(path, 4)[:-1])
    assert torch.allclose(lam.diff(), lam.diff()[:1].expand(3), rtol=1e-6)


def trials(grid, path, steps: int) -> dict:
    """What `AdaptiveGrid.fitted` tries for a sampler with a first-step rule: name -> (times, options)."""
    out = {}
    for name, ts in grid.candidates(path, steps).items():
        rules = FIRST_STEP_RULES if path.alpha(ts[:1]).item() == 0 else (None,)
        out.update({name if r is None else f"{name}, first_step={r}": (ts, {} if r is None else {"first_step": r})
                    for r in rules})
    return out


def test_pilots_measure_at_least_16384_coordinates_with_32_to_1024_draws():
    from genkit.samplers.adaptive import pilot_draws

    assert [pilot_draws(d) for d in (2, 32, 48, 64, 256, 784, 3 * 64 * 64)] == [1024, 512, 341, 256, 64, 32, 32]


def test_fitted_grid_keeps_the_candidate_nearest_its_reference_once_per_sampler_and_steps():
    """`fitted` returns the candidate grid (and first-step rule, on a flow) whose solve of the pilot's
    draws lands nearest the pilot's reference (each trial's error recomputed here), and a second
    call costs no evaluation. The reference is the exact ODE's image of the draws from t = 1, where
    the candidates start. `best` picks the contender whose own fit is nearest."""
    from genkit.paths import FlowPath
    from genkit.samplers import AdaptiveGrid

    path = FlowPath()
    draws = torch.randn(32, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    pilot = Denoiser(GMM.as_net(path, "velocity"), path, "velocity")
    grid = AdaptiveGrid.calibrate(pilot, draws)
    fine = SCHEDULES["log_snr"](path, 2000)
    exact = SAMPLERS["dpmpp_2m_pc"](Denoiser(GMM.as_net(path, "velocity"), path, "velocity"), draws.clone(), fine)
    assert (grid.reference - exact).square().mean().sqrt() < 1e-3
    unipc = SAMPLERS["unipc"].build
    ts, options = grid.fitted(unipc, 8, order=3)
    name, chosen, chosen_options, errors = grid.choices[(unipc, 8, repr([("order", 3)]))]
    expected = trials(grid, path, 8)
    assert torch.equal(ts, chosen) and options == chosen_options and set(errors) == set(expected) and len(errors) == 19  # 10 grids, 9 at pure noise
    for trial, (times, rule) in expected.items():
        out = unipc(Denoiser(GMM.as_net(path, "velocity"), path, "velocity"), draws * path.prior_std(float(times[0])),
                    times, order=3, **rule)
        assert math.isclose(sliced_wasserstein(out, grid.reference), errors[trial], rel_tol=1e-6)
    assert errors[name] == min(errors.values()) and options == {"order": 3, **expected[name][1]}
    before = pilot.nfe
    again = grid.fitted(unipc, 8, order=3)
    assert torch.equal(again[0], ts) and again[1] == options and pilot.nfe == before
    second = SAMPLERS["dpmpp_2m_pc"].build
    fn, best_ts, best_options = grid.best([(second, {}), (unipc, {"order": 3})], 8)
    rival = grid.choices[(second, 8, "[]")]
    assert (fn is unipc) == (errors[name] < rival[3][rival[0]])
    assert torch.equal(best_ts, ts if fn is unipc else rival[1]) and best_options == (options if fn is unipc else rival[2])


def test_fitted_picks_the_contender_that_is_better_on_fresh_draws_of_a_multimodal_mixture():
    """Regression (#35): on a 64-D mixture of 16 anisotropic components with unequal weights, at 5
    steps of DDPM's linear/eps path, per-sample RMS on the pilot chose UniPC-3 (0.138 against
    0.150), whose samples lie 2.5x farther from the exact ODE's on fresh draws (sliced W2 0.055
    against 0.020 on 3000 draws, `benchmarks/selection_rule.py`); the sliced W2 on the same pilot
    chooses DPM-Solver++(2M) with its corrector."""
    from genkit.samplers import AdaptiveGrid
    from genkit.samplers.adaptive import pilot_draws
    from genkit.samplers.schedules import log_snr

    mixture = GaussianMixture.random(16, 64, 0.1, seed=32, anisotropy=4.0, unequal_weights=True)
    path = DiscreteVPPath(make_betas("linear", 1000))
    denoiser = Denoiser(mixture.as_net(path, "eps"), path, "eps")
    pilot = torch.randn(pilot_draws(64), 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = AdaptiveGrid.calibrate(denoiser, pilot)
    contenders = [(SAMPLERS[name].build, options) for name, options in SAMPLERS["fitted"].extra["contenders"]]
    chosen, ts, options = grid.best(contenders, 5)
    fresh = torch.randn(1000, 64, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    fine = log_snr(path, 200)
    exact = SAMPLERS["dpmpp_2m_pc"](denoiser, fresh * path.prior_std(float(fine[0])), fine)
    on_fresh = {}
    for sampler, given in contenders:
        grid_ts, grid_options = grid.fitted(sampler, 5, **given)
        on_fresh[sampler] = sliced_wasserstein(sampler(denoiser, fresh * path.prior_std(float(grid_ts[0])), grid_ts,
                                                       None, **grid_options), exact)
    assert chosen is SAMPLERS["dpmpp_2m_pc"].build and on_fresh[chosen] == min(on_fresh.values())


@pytest.mark.xfail(strict=True, reason="known defect (#15): on the tight mixture the choice made on 128 pilot draws "
                   "(flow rho=2) scores 0.034 RMS on fresh draws where the best trial scores 0.0017: one of the 500 "
                   "fresh draws changes component on that grid, and the pilot's draws cannot see so rare an event")
def test_fitted_grid_is_about_as_accurate_as_the_best_candidate_on_fresh_draws():
    """The choice made on a model's pilot draws (`pilot_draws`: 128 in 4 dimensions) holds for
    others: on a tight anisotropic mixture (fine detail: the plain flow clock is a poor grid) and a
    wide one, 20 UniPC-3 steps with the fitted grid and first-step rule land within 1.25x of the
    best trial's error against the exact ODE on 500 fresh draws."""
    from genkit.paths import FlowPath
    from genkit.samplers import AdaptiveGrid
    from genkit.samplers.adaptive import pilot_draws

    path = FlowPath()
    unipc = SAMPLERS["unipc"].build
    for std in (0.02, 0.4):
        mixture = GaussianMixture.random(components=3, dim=4, std=std, anisotropy=2.0, seed=5)
        net = mixture.as_net(path, "velocity")
        draws = torch.randn(pilot_draws(4), 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        grid = AdaptiveGrid.calibrate(Denoiser(net, path, "velocity"), draws)
        fresh = torch.randn(500, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
        exact = SAMPLERS["dpmpp_2m_pc"](Denoiser(net, path, "velocity"), fresh.clone(), SCHEDULES["log_snr"](path, 1000))
        error = {name: float((unipc(Denoiser(net, path, "velocity"), fresh * path.prior_std(float(ts[0])), ts, order=3,
                                    **rule) - exact).square().mean().sqrt())
                 for name, (ts, rule) in trials(grid, path, 20).items()}
        grid.fitted(unipc, 20, order=3)
        name = grid.choices[(unipc, 20, repr([("order", 3)]))][0]
        assert error[name] <= 1.25 * min(error.values()), (std, name, error)


def test_packed_flow_clock_reaches_lower_without_collapsing_steps():
    """`flow(rho)`: rho = 1 is the even flow clock; rho > 1 puts the last evaluation at lower noise,
    descending strictly with exactly `steps` evaluations even where DDPM's discrete steps run out."""
    from genkit.paths import FlowPath
    from genkit.samplers.schedules import flow

    for path in (PATH, FlowPath()):
        assert torch.equal(flow(path, 10, rho=1.0), SCHEDULES["flow"](path, 10))
        for steps in (5, 20, 50):
            last = []
            for rho in (1.0, 1.5, 2.0):
                ts = flow(path, steps, rho=rho)
                assert len(ts) == steps + 1 and ts[-1] == 0 and (ts.diff() < 0).all(), (path, steps, rho)
                last.append(float(ts[-2]))
            assert last[0] > last[2] and last[0] >= last[1] >= last[2], (steps, last)  # DDPM: whole steps
    with pytest.raises(ValueError, match="rho"):
        flow(PATH, 10, rho=0.5)


@pytest.mark.parametrize("name", ["FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"])
def test_diffusers_flow_matching_schedulers_sample_a_flow(name):
    """Regression: a flow-matching scheduler on a rectified flow died with AttributeError (no alphas_cumprod)."""
    import diffusers

    from genkit.paths import FlowPath
    from genkit.registry import ArgumentError

    flow = FlowPath()
    denoiser = Denoiser(GMM.as_net(flow, "velocity"), flow, "velocity")
    x = torch.randn(N, 2, generator=torch.Generator().manual_seed(2))
    out = DiffusersSampler(getattr(diffusers, name)())(denoiser, x, torch.zeros(51))
    assert sliced_wasserstein(out, DATA) < 2 * FLOOR
    with pytest.raises(ArgumentError, match="not a rectified flow"):
        DiffusersSampler(getattr(diffusers, name)())(Denoiser(GMM.as_net(PATH), PATH, "eps"), x, torch.zeros(6))


@pytest.mark.parametrize("name", ["DDIMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
                                  "EulerDiscreteScheduler", "FlowMatchEulerDiscreteScheduler"])
def test_make_scheduler_builds_the_scheduler_of_the_models_path(name):
    """`scheduler_for` hands diffusers the path's own betas and prediction type (cosine betas with
    v-prediction here, which no diffusers default matches), or a flow's shift, and each samples the
    mixture; schedulers of the other kind and continuous paths are refused by name."""
    import diffusers

    from genkit.paths import FlowPath, VPPath
    from genkit.registry import ArgumentError
    from genkit.samplers.diffusers import is_flow_scheduler, scheduler_for

    cls = getattr(diffusers, name)
    path, kind = (FlowPath(shift=3.0), "velocity") if is_flow_scheduler(cls) else \
        (DiscreteVPPath(make_betas("cosine", 1000)), "v")
    scheduler = scheduler_for(path, kind, cls)
    assert scheduler.config.get("prediction_type", "v_prediction") == "v_prediction"
    x = torch.randn(N, 2, generator=torch.Generator().manual_seed(2))
    out = DiffusersSampler(scheduler)(Denoiser(GMM.as_net(path, kind), path, kind), x, torch.zeros(61))
    assert sliced_wasserstein(out, DATA) < 2 * FLOOR
    other = DiscreteVPPath(make_betas("linear", 1000)) if isinstance(path, FlowPath) else FlowPath()
    with pytest.raises(ArgumentError, match="flow-matching scheduler|cannot take DDPM's betas"):
        scheduler_for(other, "eps", cls)
    with pytest.raises(ArgumentError, match="continuous-time VPPath"):
        scheduler_for(VPPath(), "eps", cls)
