"""Rectified flow: SD3's timestep densities against their closed forms, the shift, parity with
diffusers' FlowMatchEulerDiscreteScheduler, and sampling with the exact velocity."""
import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from genkit.config import ConfigError, MethodConfig, load_config
from genkit.methods.flow import FlowConfig
from genkit.methods import RectifiedFlow
from genkit.methods.time_densities import CosMap, LogitNormal, Mode, Uniform
from genkit.oracles import GaussianMixture, sliced_wasserstein
from genkit.paths import FlowPath
from genkit.paths.flow import shift_time, unshift_time
from genkit.samplers import SAMPLERS, SCHEDULES, BatchNoise, Denoiser
from tests.conftest import default_grid

DENSITIES = {"uniform": Uniform(), "logit_normal": LogitNormal(0.0, 1.0), "logit_normal(1, 0.6)": LogitNormal(1.0, 0.6),
             "mode(1.29)": Mode(1.29), "mode(-0.5)": Mode(-0.5), "cosmap": CosMap()}


@pytest.mark.parametrize("name", list(DENSITIES))
def test_sampled_times_follow_the_density(name):
    """Kolmogorov-Smirnov: the largest CDF gap of 20,000 seeded draws stays under the 1% critical value."""
    density, n = DENSITIES[name], 20_000
    t = density.sample(n, torch.Generator().manual_seed(0)).sort().values
    assert t.min() > 0 and t.max() < 1
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n
    cdf = density.cdf(t)
    ks = torch.maximum(upper - cdf, cdf - (upper - 1 / n)).max()
    assert ks < 1.63 / math.sqrt(n)


@pytest.mark.parametrize("name", list(DENSITIES))
def test_pdf_is_the_derivative_of_the_cdf_and_integrates_to_one(name):
    density = DENSITIES[name]
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    h = 1e-6
    assert torch.allclose(density.pdf(t), (density.cdf(t + h) - density.cdf(t - h)) / (2 * h), rtol=1e-4, atol=1e-6)
    grid = torch.linspace(1e-6, 1 - 1e-6, 200_001, dtype=torch.float64)
    assert torch.trapezoid(density.pdf(grid), grid) == pytest.approx(1.0, abs=2e-3)


def test_cosmap_density_is_the_papers():
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    assert torch.allclose(CosMap().pdf(t), 2 / (math.pi - 2 * math.pi * t + 2 * math.pi * t**2))


def test_shift_is_sd3s_and_inverts():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    for a in (0.5, 1.0, 3.0):
        assert torch.allclose(shift_time(t, a), a * t / (1 + (a - 1) * t))
        assert torch.allclose(unshift_time(shift_time(t, a), a), t)
    assert torch.all(shift_time(t[1:-1], 3.0) > t[1:-1])  # a > 1 spends more time at high noise


@pytest.mark.parametrize("density_as", ["sample", "weight"])
@pytest.mark.parametrize("density, shift", [("logit_normal", 1.0), ("mode", 1.0), ("cosmap", 3.0), ("logit_normal", 3.0)])
def test_sampling_and_weighting_give_the_same_expected_loss(density, shift, density_as):
    """E[L(t)] under the shifted density, for a test loss L(t) = (1 - t)^2 + sin(3t)."""
    cfg = MethodConfig(name="flow", flow=FlowConfig(time_density=density, shift=shift, density_as=density_as))
    t, w = RectifiedFlow(cfg).sample_time(400_000, torch.Generator().manual_seed(0))
    w = torch.ones_like(t) if w is None else w
    estimate = (w * ((1 - t) ** 2 + torch.sin(3 * t))).mean()
    base = RectifiedFlow(cfg).density  # the exact value, by quadrature over the unshifted variable
    u = torch.linspace(1e-7, 1 - 1e-7, 400_001, dtype=torch.float64)
    s = shift_time(u, shift)
    exact = torch.trapezoid(base.pdf(u) * ((1 - s) ** 2 + torch.sin(3 * s)), u)
    assert estimate == pytest.approx(float(exact), abs=0.01)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [4, 28])
def test_euler_matches_diffusers_flow_match_euler_step_for_step(shift, steps):
    """The same velocities on diffusers' own (shifted) sigmas give the same iterates."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.double()  # [steps + 1], ending at 0
    path = FlowPath(shift)

    def net(x, t, y=None):  # any smooth velocity field
        return torch.sin(3 * x) * t.to(x)[:, None] + 0.5 * x

    g = torch.Generator().manual_seed(0)
    x_ours = torch.randn(8, 6, generator=g, dtype=torch.float64)
    x_theirs = x_ours.clone()
    for i in range(steps):
        x_ours = SAMPLERS["euler"](Denoiser(net, path, "velocity"), x_ours, sigmas[i:i + 2])
        sigma = sigmas[i].expand(8)
        x_theirs = scheduler.step(net(x_theirs, sigma), scheduler.timesteps[i], x_theirs).prev_sample.double()
        assert torch.allclose(x_ours, x_theirs, atol=1e-5), i


def test_our_uniform_grid_is_diffusers_without_the_double_shift():
    """diffusers spaces sigmas from 1 to shift(1/1000) and shifts again; genkit spaces u evenly
    from 1 to 0 and shifts once. The first `steps` points differ only through that end point."""
    steps, shift = 10, 3.0
    ours = SCHEDULES["uniform"](FlowPath(shift), steps)
    expected = shift_time(torch.linspace(1, 0, steps + 1, dtype=torch.float64), shift)
    assert torch.allclose(ours, expected)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    end = shift_time(torch.tensor(1e-3, dtype=torch.float64), shift)
    theirs = shift_time(torch.linspace(1, float(end), steps, dtype=torch.float64), shift)
    assert torch.allclose(scheduler.sigmas[:-1].double(), theirs, atol=1e-6)


MIXTURE = GaussianMixture(torch.tensor([[-0.6, 0.3], [0.5, 0.5], [0.1, -0.7]]), std=0.15)
N = 3000
DATA = MIXTURE.sample(N, torch.Generator().manual_seed(1)).float()
FLOOR = sliced_wasserstein(MIXTURE.sample(N, torch.Generator().manual_seed(9)).float(), DATA)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("name, steps", [("euler", 200), ("heun", 100), ("ode", 10), ("dpmpp_2m", 30), ("ddim", 200),
                                         ("unipc", 100)])
def test_flow_samplers_with_the_exact_velocity_reproduce_the_mixture(name, steps, shift):
    path = FlowPath(shift)
    denoiser = Denoiser(MIXTURE.as_net(path, "velocity"), path, "velocity")
    ts, options = default_grid(name, MIXTURE.as_net(path, "velocity"), path, "velocity", steps, 2)
    out = SAMPLERS[name](denoiser, torch.randn(N, 2, generator=torch.Generator().manual_seed(2)) * path.prior_std(float(ts[0])),
                         ts, BatchNoise(3), **options)
    assert torch.allclose(out.mean(0), DATA.mean(0), atol=0.03)
    assert torch.allclose(torch.cov(out.T), torch.cov(DATA.T), atol=0.03)
    assert sliced_wasserstein(out, DATA) < 1.5 * FLOOR


@pytest.mark.parametrize("name, options", [("dpmpp_2m_pc", {}), ("unipc", {"order": 3})])
def test_first_step_rules_from_pure_noise_against_the_gaussian_closed_form(name, options):
    """For Gaussian data N(mu, c^2) the probability-flow ODE from pure noise x_1 is closed-form:
    x_t = alpha_t mu + sqrt(alpha_t^2 c^2 + sigma_t^2) x_1. After a corrected first step to noise
    level sigma/alpha = r, the `end` rule errs by O(r^-2) (x0_hat taken as constant at its end value)
    and the `mean` rule by O(r^-3) or less (x0_hat linear in alpha/sigma, exact to leading order);
    at r = 1, a step far beyond the low-SNR regime, the end point's estimate is the nearer."""
    from genkit.registry import ArgumentError

    path, mu, c = FlowPath(), torch.tensor([[0.3, -0.2]]), 2.0
    gaussian = GaussianMixture(mu, std=c)
    x1 = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    error = {}
    for r in (1, 100, 1000):
        t1 = r / (r + 1)  # sigma / alpha = t / (1 - t) = r
        exact = (1 - t1) * mu.double() + ((1 - t1) ** 2 * c**2 + t1**2) ** 0.5 * x1
        for rule in ("end", "mean"):
            seen = {}
            SAMPLERS[name](Denoiser(gaussian.as_net(path, "velocity"), path, "velocity"), x1.clone(),
                           torch.tensor([1.0, t1, t1 / 2, 0.0], dtype=torch.float64), first_step=rule,
                           callback=lambda i, t, x, x0: seen.setdefault(i, x.clone()), **options)
            error[rule, r] = float((seen[1] - exact).square().mean().sqrt())
    assert 50 < error["end", 100] / error["end", 1000] < 200, error  # second order in 1 / r
    assert error["mean", 100] / error["mean", 1000] > 500 and error["mean", 1000] < 1e-4 * error["end", 1000], error
    assert error["end", 1] < error["mean", 1], error
    with pytest.raises(ArgumentError, match="first_step"):
        SAMPLERS[name](Denoiser(gaussian.as_net(path, "velocity"), path, "velocity"), x1, SCHEDULES["flow"](path, 4),
                       first_step="both", **options)


def test_shifted_flow_grid_is_sd3s_time_shift_of_the_even_clock():
    """`flow(shift=s)` puts the k-th of K points at s u / (1 + (s - 1) u), u = 1 - k / K (SD3's shift);
    s = 1 is the even flow clock, s < 1 packs the steps toward the clean end."""
    from genkit.samplers.schedules import flow

    path = FlowPath()
    assert torch.equal(flow(path, 10, shift=1.0), SCHEDULES["flow"](path, 10))
    for s in (0.35, 0.5, 3.0):
        for steps in (5, 20):
            u = torch.linspace(1, 0, steps + 1, dtype=torch.float64)[:-1]
            ts = flow(path, steps, shift=s)
            assert torch.allclose(ts[:-1], s * u / (1 + (s - 1) * u), rtol=5e-3) and ts[-1] == 0  # the clock starts at t_max - t_min
            assert (ts.diff() < 0).all() and (ts[-2] < SCHEDULES["flow"](path, steps)[-2]) == (s < 1)
    with pytest.raises(ValueError, match="shift"):
        flow(path, 5, shift=0.0)


def test_flow_config_defaults_to_velocity_and_refuses_eps():
    cfg = load_config(None, ["method.name=flow"])
    assert cfg.method.resolved_prediction == "velocity" and cfg.method.flow.time_density == "logit_normal"
    with pytest.raises(ConfigError, match="eps cannot be inverted"):
        load_config(None, ["method.name=flow", "method.prediction=eps"])
    with pytest.raises(ConfigError, match="mode_scale"):
        load_config(None, ["method.name=flow", "method.flow.mode_scale=2.0"])


def test_straightness_is_zero_for_straight_paths_and_positive_for_crossing_ones():
    from genkit.reflow import straightness

    path = FlowPath()
    x1 = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    point = GaussianMixture(torch.tensor([[0.5, -0.5]]), std=0.0)  # one point: every path is a line
    assert straightness(Denoiser(point.as_net(path, "velocity"), path, "velocity"), x1, steps=20) < 1e-12
    two = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), std=0.05)
    assert straightness(Denoiser(two.as_net(path, "velocity"), path, "velocity"), x1, steps=20) > 0.01


def test_reflow_pairs_resume_and_train(tiny_cfg, tmp_path):
    import genkit
    from genkit.reflow import generate_pairs, load_pairs
    from genkit.training import train

    cfg = tiny_cfg("method.name=flow", "train.max_steps=2")
    train(cfg)
    model = genkit.load(cfg.output_dir)
    out = tmp_path / "pairs"
    generate_pairs(model, out, num=10, steps=2, shard_size=4, progress=False)
    first = load_pairs(out)
    assert first.x0.shape == (10, 1, 16, 16) and first.labels.tolist() == [i % 4 for i in range(10)]
    # the pairs are the sampler's own: the noise reproduces the sample
    again = model.sample(10, steps=2, sampler="euler", labels=first.labels, progress=False)
    assert torch.allclose(again.images * 2 - 1, first.x0, atol=1e-6) and torch.equal(again.noise, first.noises)
    (out / "pairs-00001.safetensors").unlink()  # as if killed before the second shard
    with pytest.raises(ConfigError, match="rerun"):
        load_pairs(out)
    generate_pairs(model, out, num=10, steps=2, shard_size=4, progress=False)
    assert torch.equal(load_pairs(out).noises, first.noises)
    from genkit.registry import ArgumentError

    with pytest.raises(ArgumentError, match="out_dir: .* other settings"):
        generate_pairs(model, out, num=10, steps=3, shard_size=4, progress=False)
    rf2 = tiny_cfg("method.name=flow", f"data.path={out}", f"train.init_from={cfg.output_dir}",
                   f"output_dir={tmp_path / 'rf2'}", "train.batch_size=4", "train.max_steps=2")
    assert train(rf2).is_dir()
    with pytest.raises(ConfigError, match="flow only"):
        train(tiny_cfg(f"data.path={out}", f"output_dir={tmp_path / 'ddpm'}"))


def test_one_step_distillation_trains_the_map_at_the_noise_end_on_pairs_only(tiny_cfg, tmp_path):
    """InstaFlow's distillation is the flow loss with every time at t = 1, which needs reflow pairs."""
    import genkit
    from genkit.methods import build_method
    from genkit.reflow import generate_pairs
    from genkit.training import train

    cfg = tiny_cfg("method.name=flow", "method.flow.time_density=noise_end", "train.max_steps=2")
    t, weight = build_method(cfg).sample_time(16, torch.Generator().manual_seed(0))
    assert torch.equal(t, torch.ones(16, dtype=torch.float64)) and weight is None
    with pytest.raises(ConfigError, match="noise_end .* trains on reflow pairs"):
        train(cfg)
    with pytest.raises(ConfigError, match="density_as: noise_end is a point mass"):
        tiny_cfg("method.name=flow", "method.flow.time_density=noise_end", "method.flow.density_as=weight")
    teacher = tiny_cfg("method.name=flow", "train.max_steps=2", f"output_dir={tmp_path / 'teacher'}")
    train(teacher)
    pairs = generate_pairs(genkit.load(teacher.output_dir), tmp_path / "pairs", num=8, steps=2, progress=False)
    one_step = tiny_cfg("method.name=flow", "method.flow.time_density=noise_end", f"data.path={pairs}",
                        f"train.init_from={teacher.output_dir}", "train.batch_size=4", "train.max_steps=2",
                        f"output_dir={tmp_path / 'one_step'}")
    drawn = genkit.load(train(one_step)).sample(4, sampler="euler", steps=1, progress=False)
    assert drawn.nfe == 1 and torch.isfinite(drawn.images).all()
