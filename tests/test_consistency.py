"""Consistency models against closed forms: the boundary condition, a loss that vanishes for the
exact consistency function of Gaussian data (whose flow map is affine) under an exact teacher,
a teacher on any path read as the flow's ODE, iCT's grid, curriculum and noise density, and
multistep sampling with the exact function."""
import json
import math

import pytest
import torch

from genkit.config import load_config
from genkit.methods.consistency import Consistency, pseudo_huber
from genkit.methods.ddpm import make_betas
from genkit.oracles import GaussianMixture
from genkit.paths import DiscreteVPPath, FlowPath, VEPath, VPPath
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


class OracleTeacher:
    """A teacher as consistency distillation reads one: the exact denoiser of N(M, S^2 I) on `path`."""

    num_classes = 0

    def __init__(self, path, prediction: str):
        self.path, self.prediction = path, prediction
        self.net = GaussianMixture(M[None], S).as_net(path, prediction)

    def denoiser(self, labels=None, guidance: float = 1.0, precision: str = "no") -> Denoiser:
        return Denoiser(self.net, self.path, self.prediction)


def distillation(solver: str, path=None, prediction: str = "eps") -> Consistency:
    cfg = load_config(None, ["method.name=consistency", f"method.consistency.teacher_solver={solver}"])
    return Consistency(cfg.method, teacher=OracleTeacher(path or VPPath(), prediction))


class ExactTeacher(Consistency):
    """Consistency *training's* pairs with the exact ODE in place of the shared noise: the lower
    point is the upper point carried down the flow, so the exact consistency function gives a zero loss."""

    def loss(self, net, x0, y, generator=None, noise=None):
        t, sigma = self.grid()
        i = self.draw_intervals(x0.shape[0], sigma, generator)
        lower, upper = t[i], t[i + 1]
        x_upper = self.path.noise(x0, torch.randn(x0.shape, generator=generator, dtype=x0.dtype), upper)
        x_lower = flow_map(x_upper, upper, lower)
        diff = self.consistency_function(net, x_upper, upper, y) - self.consistency_function(net, x_lower, lower, y)
        return ((1 / (upper - lower)) * pseudo_huber(diff.double(), 1e-8)).mean()


@pytest.mark.parametrize("path, prediction", [
    (FlowPath(), "velocity"), (VPPath(), "eps"), (VPPath(), "x0"), (VEPath(), "eps"),
    (DiscreteVPPath(make_betas("linear", 1000)), "v"), (DiscreteVPPath(make_betas("cosine", 1000)), "eps")])
def test_a_teacher_on_any_path_is_read_as_the_flows_ode(path, prediction):
    method = distillation("euler", path, prediction)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    x = torch.randn(19, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + M
    # the teacher's net sees float32 times (as any net does): agreement to float32 round-off
    assert torch.allclose(method.teacher_velocity(x, t, None), velocity(x, t), atol=1e-4, rtol=1e-4)


def test_distillation_through_an_exact_teacher_drives_the_loss_to_zero_at_the_consistency_function():
    x0 = M + S * torch.randn(512, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def loss(method, net, progress):
        method.progress = progress
        return method.loss(net, x0, None, torch.Generator().manual_seed(1)).item()

    euler, heun = distillation("euler"), distillation("heun")
    for progress in (0.0, 0.99):  # 10 and 1280 intervals
        assert loss(heun, ExactNet(), progress) < loss(euler, ExactNet(), progress)  # Heun's smaller step error
    assert loss(heun, ExactNet(), 0.99) < 0.1 * loss(heun, ExactNet(), 0.0)  # the error shrinks with the intervals

    class Off(ExactNet):  # the exact function, a little wrong away from the boundary
        def forward(self, x, t, y=None):
            return super().forward(x, t) * 1.05
    assert loss(heun, Off(), 0.99) > 100 * loss(heun, ExactNet(), 0.99)


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
    uniform = Consistency(load_config(None, ["method.name=consistency",
                                             "method.consistency.interval_density=uniform"]).method)
    counts = torch.bincount(uniform.draw_intervals(190000, uniform.grid(18)[1], torch.Generator().manual_seed(0)))
    assert len(counts) == 19 and (counts - 10000).abs().max() < 500  # the 19 intervals alike (4.5 std)


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


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
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


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_consistency_distills_a_trained_model_from_the_cli(imagefolder, tmp_path):
    from genkit.training import train

    teacher = tmp_path / "teacher"
    result = run_script("train.py", *tiny_overrides(imagefolder, teacher), "method.name=flow", "train.max_steps=2")
    assert result.returncode == 0, result.stderr[-2000:]
    student = tmp_path / "student"
    distill = [*tiny_overrides(imagefolder, student), "method.name=consistency", f"method.consistency.teacher={teacher}",
               "method.consistency.teacher_guidance=2", f"train.init_from={teacher}", "train.max_steps=2",
               "sample.sampler=consistency", "sample.steps=1"]
    result = run_script("train.py", *distill)
    assert result.returncode == 0, result.stderr[-2000:]
    log = [json.loads(line) for line in (student / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(math.isfinite(row["loss"]) and row["loss"] > 0 for row in log)
    png = tmp_path / "one.png"
    result = run_script("sample.py", "--checkpoint", str(student), "--num", "4", "--out", str(png))
    assert result.returncode == 0 and "1 network evaluations" in result.stdout and png.is_file(), result.stderr[-2000:]

    def refused(*overrides):
        cfg = load_config(None, [*tiny_overrides(imagefolder, tmp_path / "refused"), "method.name=consistency",
                                 *overrides])
        with pytest.raises(ConfigError) as err:
            train(cfg)
        return str(err.value)
    assert "method.consistency.teacher:" in refused(f"method.consistency.teacher={tmp_path / 'nothing'}")
    assert "teacher has 4 classes, this model 0" in refused(f"method.consistency.teacher={teacher}",
                                                            "model.num_classes=0")
    assert "teacher models 1 x 16 x 16 inputs" in refused(f"method.consistency.teacher={teacher}",
                                                          "data.image_size=32")
    with pytest.raises(ConfigError, match="teacher_solver: 'rk4' is not one of euler, heun"):
        load_config(None, ["method.name=consistency", "method.consistency.teacher_solver=rk4"])


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_distillation_from_an_exact_teacher_moves_one_step_samples_towards_the_data():
    """Consistency distillation as a whole, on a 2-D mixture whose exact flow is the teacher: a
    small net that starts as the flow (one step lands on the mean, far from the four modes)
    learns a one-step map much closer to the data."""
    from genkit.oracles import sliced_wasserstein

    mixture = GaussianMixture(torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]]), std=0.1)
    path = FlowPath()

    class Teacher:
        num_classes = 0

        def denoiser(self, labels=None, guidance=1.0, precision="no"):
            return Denoiser(mixture.as_net(path, "velocity"), path, "velocity")

    Teacher.path = path

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Sequential(torch.nn.Linear(2 + 16, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128),
                                              torch.nn.SiLU(), torch.nn.Linear(128, 2))

        def forward(self, x, t, y=None):
            angles = t[:, None].float() * 2.0 ** torch.arange(8)
            return self.layers(torch.cat([x.float(), angles.sin(), angles.cos()], 1)).to(x.dtype)

    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(800):  # the teacher's role first: a flow, from which distillation starts
        x0, eps = mixture.sample(256).float(), torch.randn(256, 2)
        t = torch.rand(256, dtype=torch.float64)
        loss = (net(path.noise(x0, eps, t), t) - (eps - x0)).square().mean()
        opt.zero_grad(), loss.backward(), opt.step()
    z = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1))
    data = mixture.sample(4000, torch.Generator().manual_seed(2))

    def one_step_distance():
        with torch.no_grad():
            return sliced_wasserstein((z - net(z, torch.ones(4000))).double(), data)

    before = one_step_distance()
    cfg = load_config(None, ["method.name=consistency", "method.consistency.interval_density=uniform",
                             "method.consistency.start_intervals=18", "method.consistency.end_intervals=18"])
    method = Consistency(cfg.method, teacher=Teacher())
    opt = torch.optim.Adam(net.parameters(), 2e-4)
    for _ in range(1500):
        loss = method.loss(net, mixture.sample(256).float(), None)
        opt.zero_grad(), loss.backward(), opt.step()
    assert one_step_distance() < 0.6 * before
