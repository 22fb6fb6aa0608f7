"""MeanFlow against a closed form: for Gaussian data N(m, s^2 I) on the flow path the flow map,
hence the average velocity u(z, r, t), is affine in z, so the identity u = v - (t - r) du/dt and
one-step sampling can be checked exactly."""
import pytest
import torch

from genkit.config import load_config
from genkit.methods.meanflow import MeanFlow, meanflow_target
from genkit.paths import FlowPath
from genkit.registry import ConfigError
from genkit.samplers import SAMPLERS, SCHEDULES, Denoiser
from tests.conftest import run_script, tiny_overrides

M, S = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), 0.3  # data N(M, S^2 I)


def mean(t):
    return (1 - t)[:, None] * M


def std(t):
    return ((1 - t) ** 2 * S**2 + t**2).sqrt()[:, None]


def flow_map(z, t, r):
    """Where the probability-flow ODE takes z from time t to time r (an affine map for Gaussian data)."""
    return mean(r) + std(r) / std(t) * (z - mean(t))


def velocity(z, t):
    d_std = ((t - 1) * S**2 + t)[:, None] / std(t)  # d std / dt
    return -M + d_std / std(t) * (z - mean(t))


def average_velocity(z, r, t):
    """u(z, r, t) = (z - z_r) / (t - r); the instantaneous velocity where r = t."""
    gap = (t - r)[:, None]
    safe = torch.where(gap == 0, torch.ones_like(gap), gap)
    return torch.where(gap == 0, velocity(z, t), (z - flow_map(z, t, r)) / safe)


def draw(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05
    r = t * torch.rand(n, generator=g, dtype=torch.float64)
    z = mean(t) + std(t) * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return z, r, t


@pytest.mark.parametrize("jvp, tol", [("forward", 1e-10), ("difference", 1e-6)])
def test_meanflow_identity_against_finite_differences_of_the_closed_form(jvp, tol):
    """du/dt along the true trajectory (a central difference of u at the flow-mapped points)
    equals the JVP that training takes, and u = v - (t - r) du/dt holds: the target the method
    builds for the exact average velocity is that velocity itself."""
    z, r, t = draw()
    h = 1e-4
    along = (average_velocity(flow_map(z, t, t + h), r, t + h) - average_velocity(flow_map(z, t, t - h), r, t - h)) / (2 * h)
    u_exact, v = average_velocity(z, r, t), velocity(z, t)
    assert torch.allclose(u_exact, v - (t - r)[:, None] * along, atol=1e-6)  # the identity itself
    u, target = meanflow_target(average_velocity, z, r, t, v, jvp=jvp, step=1e-5)
    dudt = (v - target) / (t - r)[:, None]
    assert torch.allclose(dudt, along, atol=1e-5)
    assert torch.allclose(target, u_exact, atol=tol) and torch.equal(u, u_exact)
    assert not target.requires_grad


def test_where_r_equals_t_the_target_is_the_velocity():
    z, _, t = draw()
    v = velocity(z, t)
    _, target = meanflow_target(average_velocity, z, t, t, v)
    assert torch.allclose(target, v, atol=1e-12)


def test_one_step_with_the_exact_average_velocity_lands_on_the_data_distribution():
    """z_0 = z_1 - u(z_1, 0, 1) is the flow map itself: exact for any number of steps."""
    class Exact(torch.nn.Module):
        def forward(self, x, t, y=None, r=None):
            return average_velocity(x.double(), r.double(), t.double()).to(x.dtype)

    path = FlowPath()
    z1 = torch.randn(20000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for steps in (1, 2, 4):
        denoiser = Denoiser(Exact(), path, "velocity")
        x0 = SAMPLERS["meanflow"](denoiser, z1, SCHEDULES["uniform"](path, steps))
        assert denoiser.nfe == steps
        assert torch.allclose(x0, flow_map(z1, torch.ones(len(z1), dtype=torch.float64),
                                           torch.zeros(len(z1), dtype=torch.float64)), atol=1e-9)
        assert torch.allclose(x0.mean(0), M, atol=0.01) and torch.allclose(x0.std(0), torch.full((3,), S, dtype=torch.float64), atol=0.01)


def test_time_pairs_follow_the_paper():
    cfg = load_config(None, ["method.name=meanflow", "model.interval=true"])
    method = MeanFlow(cfg.method, 10)
    r, t = method.sample_times(100000, torch.Generator().manual_seed(0))
    assert (r <= t).all() and ((r > 0) & (t < 1)).all()
    assert (r < t).double().mean() == pytest.approx(0.25, abs=0.01)
    logits = torch.logit(torch.cat([r[r < t], t[r < t]]))  # the pairs kept apart: both draws
    assert logits.mean() == pytest.approx(-0.4, abs=0.02) and logits.std() == pytest.approx(1.0, abs=0.02)


def test_meanflow_needs_a_second_time_and_says_so():
    with pytest.raises(ConfigError, match="model.interval: MeanFlow's net takes a second time"):
        load_config(None, ["method.name=meanflow"])
    with pytest.raises(ConfigError, match="model.interval: pixelcnn takes one time"):
        load_config(None, ["model.name=pixelcnn", "method.name=autoregressive", "sample.sampler=cached",
                           "model.interval=true"])
    with pytest.raises(ConfigError, match="sample.sampler: meanflow steps with an average velocity"):
        load_config(None, ["method.name=flow", "sample.sampler=meanflow"])


@pytest.mark.parametrize("net", [pytest.param("unet", marks=pytest.mark.slow), pytest.param("dit", marks=pytest.mark.slow)])
def test_meanflow_trains_and_samples_from_the_cli(imagefolder, tmp_path, net):
    out = tmp_path / "run"
    result = run_script("train.py", *tiny_overrides(imagefolder, out), f"model.name={net}", "method.name=meanflow",
                        "model.interval=true", "sample.sampler=meanflow", "sample.steps=1", "train.max_steps=2")
    assert result.returncode == 0, result.stderr[-2000:]
    for sampler, steps in [("meanflow", "1"), ("meanflow", "2"), ("euler", "4")]:  # r = t: the plain velocity
        png = tmp_path / f"{sampler}{steps}.png"
        result = run_script("sample.py", "--checkpoint", str(out), "--sampler", sampler, "--steps", steps,
                            "--num", "4", "--out", str(png))
        assert result.returncode == 0 and png.is_file(), result.stderr[-2000:]
        assert f"{steps if sampler == 'meanflow' else 4} network evaluations" in result.stdout


def test_the_loss_spends_jvps_only_where_r_differs_from_t_and_equals_the_one_pass_form(tiny_cfg):
    """The loss splits the batch (r = t: plain regression onto v; r < t: the JVP target); it must
    equal the paper's single pass over the whole batch, draws and all."""
    from genkit.methods.base import drop_labels
    from genkit.nets import build_net
    from tests.conftest import perturb

    cfg = tiny_cfg("method.name=meanflow", "model.interval=true", "model.name=dit")
    net = perturb(build_net(cfg), scale=0.05)
    method = MeanFlow(cfg.method, cfg.model.num_classes)
    x0 = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    y = torch.arange(16) % 4
    loss = method.loss(net, x0, y, torch.Generator().manual_seed(7))

    g = torch.Generator().manual_seed(7)  # the same draws, in the same order
    r, t = method.sample_times(16, g)
    eps = torch.randn(x0.shape, generator=g)
    z = method.path.noise(x0, eps, t)
    y = drop_labels(y, cfg.method.p_uncond, 4, g)
    u, target = meanflow_target(lambda z_, r_, t_: net(z_, t_, y, r=r_), z, r.float(), t.float(), eps - x0)
    squared = (u - target).flatten(1).pow(2).sum(1)
    assert 0 < (r < t).sum() < 16
    assert loss.item() == pytest.approx((squared / (squared + 1e-3)).mean().item(), rel=1e-5)
