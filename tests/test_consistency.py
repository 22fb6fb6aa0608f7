"""Consistency training against closed forms: the boundary condition, a loss that vanishes for
the exact consistency function of Gaussian data (whose flow map is affine), iCT's grid,
curriculum and noise density, and multistep sampling with the exact function."""
import json
import math

import pytest
import torch

from genkit.config import load_config
from genkit.methods.consistency import Consistency, pseudo_huber
from genkit.paths import FlowPath
from genkit.registry import ConfigError
from genkit.samplers import SAMPLERS, SCHEDULES, BatchNoise, Denoiser
from tests.conftest import perturb, run_script, tiny_overrides
from tests.test_meanflow import M, S, flow_map, velocity

CFG = load_config(None, ["method.name=consistency"])


def exact_velocity(x, t):
    """The velocity whose x0 estimate x - t u is the exact consistency function f*(x, t), the
    flow map to t = 0 (the average velocity over [0, t])."""
    t = t.double().expand(x.shape[0])
    safe = torch.where(t == 0, torch.ones_like(t), t)
    jump = (x - flow_map(x, safe, torch.zeros_like(t))) / safe[:, None]
    return torch.where((t == 0)[:, None], velocity(x, t), jump)


class ExactNet(torch.nn.Module):
    def forward(self, x, t, y=None):
        return exact_velocity(x.double(), t).to(x.dtype)


class ExactTeacher(Consistency):
    """Consistency *distillation* with the exact ODE as teacher: the lower point is the upper
    point carried down the flow, so the exact consistency function gives a zero loss."""

    def loss(self, net, x0, y, generator=None, noise=None):
        t, sigma = self.grid()
        i = self.draw_intervals(x0.shape[0], sigma, generator)
        lower, upper = t[i], t[i + 1]
        x_upper = self.path.noise(x0, torch.randn(x0.shape, generator=generator, dtype=x0.dtype), upper)
        x_lower = flow_map(x_upper, upper, lower)
        diff = self.consistency_function(net, x_upper, upper, y) - self.consistency_function(net, x_lower, lower, y)
        return ((1 / (upper - lower)) * pseudo_huber(diff.double(), 1e-8)).mean()


def test_the_boundary_condition_holds_for_any_net(tiny_cfg):
    from genkit.nets import build_net

    cfg = tiny_cfg("method.name=consistency")
    net = perturb(build_net(cfg))
    x = torch.randn(4, 1, 16, 16)
    method = Consistency(cfg.method, 4)
    assert torch.equal(method.consistency_function(net, x, torch.zeros(4, dtype=torch.float64), None), x)
    assert not torch.equal(method.consistency_function(net, x, torch.full((4,), 0.5, dtype=torch.float64), None), x)


def test_the_loss_vanishes_for_the_exact_consistency_function_of_a_gaussian():
    method = ExactTeacher(CFG.method)
    x0 = M + S * torch.randn(512, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for progress in (0.0, 0.5, 0.99):  # coarse to fine grids
        method.progress = progress
        # zero up to float64 round-off, times weights 1 / (t_i+1 - t_i) of up to about 1e5
        assert method.loss(ExactNet(), x0, None, torch.Generator().manual_seed(1)).item() < 1e-5

    class Off(ExactNet):  # the exact function, a little wrong away from the boundary
        def forward(self, x, t, y=None):
            return super().forward(x, t) * 1.05
    assert method.loss(Off(), x0, None, torch.Generator().manual_seed(1)).item() > 1e-3


def test_the_grid_curriculum_and_noise_density_follow_ict():
    method = Consistency(CFG.method)
    counts = []
    for progress in torch.linspace(0, 0.999, 200).tolist():
        method.progress = progress
        counts.append(method.num_intervals())
    assert counts[0] == 10 and counts[-1] == 1280 and sorted(set(counts)) == [10 * 2**k for k in range(8)]
    assert counts == sorted(counts)
    t, sigma = method.grid(40)
    assert len(t) == 42 and t[0] == 0 and t[-1] == 1 and (t.diff() > 0).all()
    assert sigma[1].item() == pytest.approx(0.002) and sigma[-2].item() == pytest.approx(80.0)
    assert torch.allclose(t[1:-1], sigma[1:-1] / (1 + sigma[1:-1]))
    rho = (sigma[1:-1] ** (1 / 7)).diff()
    assert torch.allclose(rho, rho[0].expand_as(rho))  # evenly spaced in sigma^(1/rho)
    i = method.draw_intervals(200000, *method.grid(1280)[1:], torch.Generator().manual_seed(0))
    _, sigma = method.grid(1280)
    mid = (sigma[i].clamp(min=1e-4).log() + sigma[i + 1].clamp(max=1e4).log()) / 2
    assert mid.mean().item() == pytest.approx(-1.1, abs=0.05) and mid.std().item() == pytest.approx(2.0, abs=0.1)


def test_multistep_sampling_with_the_exact_function_draws_the_data():
    path = FlowPath()
    z = torch.randn(20000, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for steps in (1, 2, 3):
        denoiser = Denoiser(ExactNet(), path, "velocity")
        x = SAMPLERS["consistency"](denoiser, z, SCHEDULES["uniform"](path, steps), BatchNoise(5))
        assert denoiser.nfe == steps
        assert torch.allclose(x.mean(0), M, atol=0.01) and torch.allclose(x.std(0), torch.full_like(M, S), atol=0.01)


def test_bad_consistency_settings_are_refused():
    with pytest.raises(ConfigError, match="sigma_min: must be below sigma_max"):
        load_config(None, ["method.name=consistency", "method.consistency.sigma_min=100"])
    with pytest.raises(ConfigError, match="start_intervals: must not exceed"):
        load_config(None, ["method.name=consistency", "method.consistency.start_intervals=2000"])
    with pytest.raises(ConfigError, match="method.prediction: the consistency function"):
        load_config(None, ["method.name=consistency", "method.prediction=x0"])


def test_consistency_trains_and_samples_from_the_cli(imagefolder, tmp_path):
    out = tmp_path / "run"
    result = run_script("train.py", *tiny_overrides(imagefolder, out), "method.name=consistency",
                        "sample.sampler=consistency", "sample.steps=1", "train.max_steps=4")
    assert result.returncode == 0, result.stderr[-2000:]
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["intervals"] for row in log] == [10, 40, 160, 640]  # the curriculum advances (8 stages in 4 steps)
    for steps in ("1", "2"):
        png = tmp_path / f"c{steps}.png"
        result = run_script("sample.py", "--checkpoint", str(out), "--steps", steps, "--num", "4", "--out", str(png))
        assert result.returncode == 0 and f"{steps} network evaluations" in result.stdout, result.stderr[-2000:]
    assert all(math.isfinite(row["loss"]) for row in log)
