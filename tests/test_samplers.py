"""DDPM ancestral and DDIM steps against diffusers' schedulers, step by step.

diffusers keeps its tables in float32, where 1 - abar_t / abar_{t-1} loses about three digits
at 1000 steps; genkit computes in float64. So that the comparison isolates the update rules and
the timestep logic, diffusers is handed the same betas in float64.
"""
import json
import warnings

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from genkit.methods import make_betas
from genkit.paths import DiscreteVPPath, FlowPath
from genkit.inference import GenerativeModel, half_dtype
from genkit.registry import ArgumentError
from genkit.samplers import SAMPLERS, Denoiser, ddim
from tests.conftest import perturb

KINDS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2", "sigmoid": "sigmoid"}
T = 1000


def gaussian_oracle(path, kind, mean=0.3, std=0.5):
    """The exact denoiser for data ~ N(mean, std^2 I), answering in prediction `kind`:
    E[eps | x_t] = sigma (x_t - alpha mean) / (alpha^2 std^2 + sigma^2)."""
    def net(x, t, y=None):
        t = t.double().reshape(-1)
        a, s = path.alpha(t)[:, None, None, None], path.sigma(t)[:, None, None, None]
        eps = s * (x.double() - a * mean) / (a**2 * std**2 + s**2)
        x0 = (x.double() - s * eps) / a
        return path.from_x0_eps(x0, eps, t, kind).float()
    return net


class StreamNoise:
    """Draws noise the way diffusers' DDPMScheduler does, from one shared generator."""

    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def randn_like(self, x):
        return torch.randn(x.shape, generator=self.g, dtype=x.dtype)


def reference_trajectory(scheduler, net, x, steps, eta=None, seed=0):
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    xs = []
    for k in scheduler.timesteps:
        xs.append(x.clone())
        out = net(x, (k.reshape(1).double() + 1) / T)
        if eta is None:
            x = scheduler.step(out, k, x, generator=g).prev_sample
        else:
            noise = torch.randn(x.shape, generator=g, dtype=x.dtype) if eta > 0 else None
            x = scheduler.step(out, k, x, eta=eta, variance_noise=noise).prev_sample
    return xs + [x]


def diffusers_scheduler(sampler, schedule, kind, **extra):
    common = dict(num_train_timesteps=T, beta_schedule=SCHEDULES[schedule], prediction_type=KINDS[kind],
                  clip_sample=False, timestep_spacing="trailing", **extra)
    if sampler == "ddpm":
        return DDPMScheduler(**common)
    return DDIMScheduler(**common, set_alpha_to_one=True)


@pytest.mark.parametrize("tables", ["shared", "own"])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps", [10, 50, pytest.param(1000, marks=pytest.mark.slow)])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddim_eta0.5"])
def test_parity_with_diffusers(schedule, kind, steps, sampler, tables):
    """`shared`: diffusers is handed genkit's float64 tables, isolating the update rules.
    `own`: each library builds its own tables from the schedule's name, as users get them;
    diffusers' float32 tables then leave differences of float32 size only."""
    if tables == "own" and (steps == 1000 or sampler != "ddpm" and schedule == "sigmoid"):
        pytest.skip("own tables: 10 and 50 steps suffice; DDIMScheduler has no sigmoid schedule")
    x = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    path = DiscreteVPPath(make_betas(schedule, T))
    net = gaussian_oracle(path, kind)
    ts = path.timesteps(steps, "trailing")
    eta = {"ddpm": None, "ddim": 0.0, "ddim_eta0.5": 0.5}[sampler]
    scheduler = diffusers_scheduler(sampler, schedule if tables == "own" or sampler == "ddpm" else "linear", kind)
    if tables == "shared":
        scheduler.betas = path.betas.clone()
        scheduler.alphas = 1 - scheduler.betas
        scheduler.alphas_cumprod = path.alphas_cumprod.clone()
    ref = reference_trajectory(scheduler, net, x, steps, eta=eta)
    assert len(ref) == steps + 1
    # step for step: each genkit step starts from diffusers' state and draws the same noise
    noise = StreamNoise(0)
    denoiser = Denoiser(net, path, kind)
    worst = 0.0
    for i in range(steps):
        ours = ddim(denoiser, ref[i], ts[i:i + 2], noise, eta=1.0 if eta is None else eta)
        worst = max(worst, (ours - ref[i + 1]).abs().max().item())
    assert worst < (1e-5 if tables == "shared" else 2e-3), worst


@pytest.mark.parametrize("tables", ["shared", "own"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("kind", ["eps", "v"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_matches_diffusers_whole_trajectories(schedule, kind, order, variant, tables):
    """genkit's UniPC against diffusers' UniPCMultistepScheduler on its trailing grid, run end to
    end (the corrector reaches back a step, so steps are not independent): every point where the
    net is asked, and the result. diffusers keeps its noise levels in float32 even when handed
    genkit's float64 alpha-bar, hence 1e-4 on shared tables (cosine's first level is 2e4). Its bh1
    ends in NaN (its final step multiplies B(h) = -h, infinite there, by a zero); genkit's must be
    finite."""
    from diffusers import UniPCMultistepScheduler

    from genkit.samplers.unipc import unipc

    path = DiscreteVPPath(make_betas(schedule, T))
    net = gaussian_oracle(path, kind)
    for steps in (5, 12):
        scheduler = UniPCMultistepScheduler(num_train_timesteps=T, beta_schedule=SCHEDULES[schedule],
                                            prediction_type=KINDS[kind], solver_order=order, solver_type=variant,
                                            timestep_spacing="trailing")
        if tables == "shared":
            scheduler.alphas_cumprod = path.alphas_cumprod.clone()
        scheduler.set_timesteps(steps)
        x = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        theirs = [x]
        for k in scheduler.timesteps:
            theirs.append(scheduler.step(net(theirs[-1], (k.reshape(1).double() + 1) / T).double(), k,
                                         theirs[-1]).prev_sample)
        asked = []
        out = unipc(Denoiser(lambda x_t, t, y=None: asked.append(x_t) or net(x_t, t), path, kind), x,
                    path.timesteps(steps, "trailing"), order=order, variant=variant)
        assert len(asked) == steps
        worst = max((a - b).abs().max().item() for a, b in zip(asked, theirs))
        if variant == "bh1":
            assert torch.isnan(theirs[-1]).all() and torch.isfinite(out).all()
        else:
            worst = max(worst, (out - theirs[-1]).abs().max().item())
        assert worst < (1e-4 if tables == "shared" else 5e-3), (steps, worst)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("zero_snr", [False, True])
def test_alphas_cumprod_match_diffusers_own_tables(schedule, zero_snr):
    """Regression: alpha-bar was floored at 2^-24 for every schedule, so cosine ended at 6.0e-8
    instead of diffusers' 2.4e-9. Only an exact zero (zero terminal SNR) is floored, at 2^-24 or
    below the entry before it, so that alpha-bar keeps falling."""
    from genkit.methods.ddpm import rescale_zero_terminal_snr

    betas = make_betas(schedule, T)
    ours = DiscreteVPPath(rescale_zero_terminal_snr(betas) if zero_snr else betas).alphas_cumprod
    theirs = DDPMScheduler(num_train_timesteps=T, beta_schedule=SCHEDULES[schedule],
                           rescale_betas_zero_snr=zero_snr).alphas_cumprod.double()
    last = -1 if zero_snr else T  # diffusers' DDPM keeps the exact 0 there
    assert torch.allclose(ours[:last], theirs[:last], rtol=1e-5, atol=1e-12)
    if zero_snr:
        assert theirs[-1] == 0 and 0 < ours[-1] <= 2.0**-24 and ours[-1] < ours[-2]
    assert (ours.diff() < 0).all()


def test_trailing_spacing_gives_exactly_the_steps_asked_for():
    """Regression: arange(T, 0, -T / steps) has one entry too many for 91 of these 1,500 pairs
    (T = 1000, steps = 61: the grid ended 0, 0 and rk4 returned NaN)."""
    for T_ in (1000, 500):
        path = DiscreteVPPath(make_betas("linear", T_))
        for steps in range(1, T_ + 1):
            ts = path.timesteps(steps, "trailing")
            assert len(ts) == steps + 1 and ts[0] == 1 and ts[-1] == 0, (T_, steps)
            assert (ts[:-1] >= 1 / T_).all() and (ts.diff() < 0).all(), (T_, steps)
    path = DiscreteVPPath(make_betas("linear", 1000))
    denoiser = Denoiser(gaussian_oracle(path, "eps"), path, "eps")
    x = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    from genkit.samplers import SAMPLERS, SCHEDULES as GRIDS
    out = SAMPLERS["ode"](denoiser, x, GRIDS["trailing"](path, 61), method="rk4")
    assert torch.isfinite(out).all() and denoiser.nfe == 4 * 60 + 1


@pytest.mark.parametrize("steps", [10, 50, 333])
def test_leading_spacing_with_steps_offset_matches_diffusers(steps):
    """Stable Diffusion's setting: leading spacing shifted up by steps_offset = 1."""
    path = DiscreteVPPath(make_betas("scaled_linear", T, 0.00085, 0.012))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              timestep_spacing="leading", steps_offset=1)
    scheduler.set_timesteps(steps)
    ours = path.timesteps(steps, "leading", steps_offset=1)[:-1] * T - 1
    assert torch.equal(ours.round().long(), scheduler.timesteps)
    with pytest.raises(ValueError, match="leading"):
        path.timesteps(steps, "trailing", steps_offset=1)


def tiny_model(tiny_cfg, *extra):
    cfg = tiny_cfg(*extra)
    from genkit.nets import build_net
    torch.manual_seed(0)
    return GenerativeModel(cfg, perturb(build_net(cfg), scale=0.02))


@pytest.mark.parametrize("net", ["unet", "dit"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "euler"])
def test_samples_do_not_depend_on_batch_size(tiny_cfg, sampler, net):
    """The same seed and batch size give the same bytes; another batch size, the same images up to
    the float rounding of batched products (oneDNN blocks a batch of 2 differently from one of 5),
    which the README states as measured: at most 4e-5 in pixel units on these nets."""
    model = tiny_model(tiny_cfg, f"model.name={net}")
    a = model.sample(5, seed=3, sampler=sampler, steps=4, batch_size=5, progress=False).images
    b = model.sample(5, seed=3, sampler=sampler, steps=4, batch_size=2, progress=False).images
    c = model.sample(5, seed=4, sampler=sampler, steps=4, batch_size=5, progress=False).images
    assert torch.equal(a, model.sample(5, seed=3, sampler=sampler, steps=4, batch_size=5, progress=False).images)
    assert (a - b).abs().max() < 1e-4 and (a - c).abs().max() > 0.1
    assert a.shape == (5, 1, 16, 16) and a.min() >= 0 and a.max() <= 1


def test_the_default_sampler_runs_on_its_fixed_grid_until_a_grid_is_fitted(tiny_cfg, tmp_path, small_pilot):
    """With no grid stored, `fitted` (the default) runs UniPC-3 on the fixed flow grid, says so, and
    starts no pilot; `fit_grid` fits one once (the pilot's evaluations not counted in the samples'
    NFE), after which `sample` draws with the chosen contender on that grid, without a new pilot, the
    same images as `schedule="adaptive"` (which fits at every call) and as naming the contender and
    grid by hand. Grids are kept per steps and guidance, and travel with the checkpoint
    (`stored_grids_travel_with_the_checkpoint`)."""
    from genkit.samplers import UnfittedGrid
    from genkit.samplers.adaptive import pilot_draws
    from genkit.samplers.schedules import flow

    model = tiny_model(tiny_cfg, "sample.sampler=fitted")  # the config default (the tiny runs name ddim)
    with pytest.warns(UnfittedGrid, match="genkit fit-grid"):
        fixed = model.sample(3, steps=4, progress=False)
    assert not model._adaptive_grids and fixed.nfe == 4  # no pilot
    by_hand = model.sample(3, steps=4, sampler="unipc", order=3, schedule=lambda path, steps: flow(path, steps),
                           progress=False)
    assert torch.equal(fixed.images, by_hand.images)

    grid = model.fit_grid(steps=4, progress=False)
    assert model.adaptive_grid().pilot_nfe > 0 and len(model.adaptive_grid().draws) == pilot_draws(16 * 16) == 8
    assert grid.sampler == "fitted" and grid.runs in ("dpmpp_2m_pc", "unipc") and len(grid.times) == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnfittedGrid)
        stored = model.sample(3, steps=4, progress=False)
    assert stored.nfe == 4 and not torch.equal(stored.images, fixed.images)
    ts = torch.tensor(grid.times, dtype=torch.float64)
    named = model.sample(3, steps=4, sampler=grid.runs, schedule=lambda path, steps: ts, progress=False,
                         **grid.run_options)
    assert torch.equal(named.images, stored.images)
    at_the_call = model.sample(3, steps=4, schedule="adaptive", progress=False)  # the pilot kept: no second one
    assert torch.equal(at_the_call.images, stored.images)
    with pytest.warns(UnfittedGrid):  # another step count or guidance has no grid yet
        model.sample(3, steps=6, progress=False)
    with pytest.warns(UnfittedGrid):
        model.sample(3, steps=4, guidance=2.0, progress=False)
    with pytest.raises(ArgumentError, match="order"):
        model.sample(3, steps=4, sampler="fitted", order=2, progress=False)
    stored_grids_travel_with_the_checkpoint(model, tmp_path)


def stored_grids_travel_with_the_checkpoint(model, tmp_path):
    """`write_grids` stores the book beside the weights; `genkit.load` reads it back, so the loaded
    model draws what the fitted one drew; a damaged `grids.json` warns and samples on the fixed grid."""
    import genkit
    from genkit.checkpoint import read_grids, write_export, write_grids
    from genkit.samplers import GRIDS_FILE, UnfittedGrid

    directory = tmp_path / "step-000004"
    directory.mkdir()
    weights = model.net.state_dict()
    write_export(directory, model.cfg, weights, weights, {"step": 4, "bad_steps_total": 0})
    write_grids(directory, model.grids)
    assert len(read_grids(directory)) == 1
    loaded = genkit.load(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnfittedGrid)
        assert torch.equal(loaded.sample(2, steps=4, progress=False).images,
                           model.sample(2, steps=4, progress=False).images)
    for damage in ["{", '{"format": 1, "grids": [{"sampler": "nope"}]}',
                   (directory / GRIDS_FILE).read_text().replace('"steps": 4', '"steps": 2')]:
        (directory / GRIDS_FILE).write_text(damage)
        with pytest.warns(UnfittedGrid, match="damaged"):
            again = genkit.load(directory)
        assert len(again.grids) == 0


def test_guidance_and_nfe(tiny_cfg):
    model = tiny_model(tiny_cfg)
    plain = model.sample(4, steps=3, guidance=1.0, progress=False)
    assert plain.nfe == 3 and plain.labels.tolist() == [0, 1, 2, 3]
    guided = model.sample(4, steps=3, guidance=3.0, progress=False)
    assert guided.nfe == 3 and not torch.allclose(plain.images, guided.images)
    assert torch.equal(plain.noise, guided.noise)  # the same starting noise, guided differently
    assert not torch.allclose(model.sample(4, steps=3, labels=0, progress=False).images,
                              model.sample(4, steps=3, labels=1, progress=False).images)


class LabelNet(torch.nn.Module):
    """Answers x plus its label (the null class's too), so that what guidance makes of it is known
    exactly; keeps the batch size of each call."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x, t, y=None):
        self.batches.append(len(x))
        return x + y.to(x.dtype)[:, None, None, None]


def test_guidance_applies_only_where_sigma_over_alpha_lies_in_its_interval():
    """Kynkäänniemi et al. 2024: uncond + w (cond - uncond) where sigma/alpha lies in the interval, the
    conditional net elsewhere; rows at different times are guided each by its own."""
    net, labels, w, null = LabelNet(), torch.tensor([0, 1, 2, 3]), 3.0, 4
    t = torch.tensor([0.1, 0.5, 0.7, 1.0], dtype=torch.float64)  # sigma/alpha on a flow: 1/9, 1, 7/3, inf
    guided = (null + w * (labels - null)).float()
    for interval, inside, calls in [((), [1, 1, 1, 1], 8), ((0.5, 2.9), [0, 1, 1, 0], 8), ((0.5,), [0, 1, 1, 1], 8),
                                    ((0.2, 0.9), [0, 0, 0, 0], 4), ((1, 7 / 3), [0, 1, 1, 0], 8)]:
        denoiser = Denoiser(net, FlowPath(), "velocity", labels, w, null, guidance_interval=interval)
        out = denoiser.raw(torch.zeros(4, 1, 2, 2), t)  # [4, 1, 2, 2]
        expected = torch.where(torch.tensor(inside, dtype=torch.bool), guided, labels.float())
        assert torch.equal(out[:, 0, 0, 0], expected), interval
        assert denoiser.nfe == 1 and net.batches[-1] == calls  # unguided everywhere: no unconditional pass
        assert denoiser.rows(torch.tensor([1, 2])).guidance_interval == interval


def test_a_model_samples_within_its_guidance_interval_and_fits_grids_per_interval(tiny_cfg):
    model = tiny_model(tiny_cfg)
    kw = dict(sampler="ddim", steps=3, progress=False)
    plain, guided = model.sample(4, guidance=1.0, **kw).images, model.sample(4, guidance=3.0, **kw).images
    assert torch.equal(model.sample(4, guidance=3.0, guidance_interval=[0], **kw).images, guided)  # every level
    assert torch.equal(model.sample(4, guidance=3.0, guidance_interval=[1e6, 1e7], **kw).images, plain)  # none
    between = model.sample(4, guidance=3.0, guidance_interval=[0.5, 5], **kw).images
    assert not torch.allclose(between, plain) and not torch.allclose(between, guided)
    configured = tiny_model(tiny_cfg, "sample.guidance_interval=[0.5, 5]")  # the config's interval by default
    assert torch.equal(configured.sample(4, guidance=3.0, **kw).images, between)
    assert torch.equal(configured.sample(4, guidance=3.0, guidance_interval=[], **kw).images, guided)
    with pytest.raises(ArgumentError, match="guidance_interval: needs 0 <= lo < hi"):
        model.sample(2, guidance_interval=[3, 1], progress=False)
    with pytest.raises(ArgumentError, match=r"guidance_interval: must be \[lo, hi\]"):
        model.sample(2, guidance_interval="wide", progress=False)


def test_grid_books_keep_a_grid_per_guidance_interval_and_read_books_without_one():
    from genkit.samplers import FittedGrid, GridBook

    fields = dict(sampler="dpmpp_2m", steps=2, guidance=2.0, options={}, runs="dpmpp_2m", run_options={},
                  times=[1.0, 0.5, 0.0], grid="flow", distance=0.1, pilot_draws=8)
    book = GridBook()
    book.add(FittedGrid(**fields, guidance_interval=(0.28, 2.9)))
    assert book.find("dpmpp_2m", 2, 2.0, {}, (0.28, 2.9)) is not None and book.find("dpmpp_2m", 2, 2.0, {}) is None
    older = GridBook.from_dict({"format": 1, "grids": [fields]}, SAMPLERS)  # written before intervals
    assert older.find("dpmpp_2m", 2, 2.0, {}) is not None
    again = GridBook.from_dict(json.loads(book.to_json()), SAMPLERS)
    assert again.find("dpmpp_2m", 2, 2.0, {}, (0.28, 2.9)) is not None
    with pytest.raises(ValueError, match="guidance_interval"):
        GridBook.from_dict({"format": 1, "grids": [{**fields, "guidance_interval": [2, 1]}]}, SAMPLERS)


@pytest.mark.parametrize("sampler", __import__("genkit.samplers", fromlist=["SAMPLERS"]).SAMPLERS.names("denoiser"))
def test_every_sampler_runs_through_the_model_and_reports_every_step(tiny_cfg, sampler):
    meanflow = ["method.name=meanflow", "model.interval=true"]  # a net taking the second time it steps with
    model = tiny_model(tiny_cfg, *(meanflow if sampler == "meanflow" else []))
    seen = []
    loose = {"rtol": 1e-3, "atol": 1e-3} if sampler == "ode" else {}  # the solver's accuracy has tests of its own
    drawn = model.sample(3, sampler=sampler, steps=4, progress=False, **loose,
                         callback=lambda step, t, x, x0: seen.append((step, t, x.shape, x0.shape)))
    assert drawn.images.shape == (3, 1, 16, 16) and torch.isfinite(drawn.images).all() and drawn.nfe > 0
    if sampler == "ode":  # the solver's steps are its own: it reports its final denoising jump
        assert len(seen) == 1
    else:
        assert [s[0] for s in seen] == list(range(len(seen))) and len(seen) >= 3
        assert all(t > 0 for _, t, _, _ in seen) and [t for _, t, _, _ in seen] == sorted((t for _, t, _, _ in seen), reverse=True)
    assert all(shape == shape0 == (3, 1, 16, 16) for _, _, shape, shape0 in seen)


def test_model_runs_a_diffusers_scheduler(tiny_cfg):
    from diffusers import DPMSolverMultistepScheduler

    model = tiny_model(tiny_cfg)
    drawn = model.sample(3, sampler=DPMSolverMultistepScheduler(), steps=5, progress=False)
    assert drawn.images.shape == (3, 1, 16, 16) and drawn.nfe == 5


def test_bad_arguments_are_named_by_their_parameter(tiny_cfg):
    from genkit.registry import ArgumentError

    model = tiny_model(tiny_cfg)
    for kwargs, message in [(dict(sampler="magic"), "sampler: unknown sampler 'magic'"),
                            (dict(sampler="cached"), "sampler: unknown sampler 'cached'"),
                            (dict(schedule="magic"), "schedule: unknown schedule"),
                            (dict(labels=7), "labels: must lie in 0..3"),
                            (dict(steps=0), "steps: must lie in 1..100000"),
                            (dict(sampler="ddim", snr=0.1), "snr: not an option of ddim"),
                            (dict(sampler="ddim", eta="high"), "eta: expected a float")]:
        with pytest.raises(ArgumentError, match=message):
            model.sample(2, progress=False, **kwargs)


def test_a_bug_inside_a_sampler_is_not_reported_as_a_bad_option(tiny_cfg, monkeypatch, tmp_path):
    """Regression: the command line caught every TypeError while sampling and blamed --option."""
    from genkit.cli import sample_main
    from genkit.registry import Component
    from genkit.samplers import SAMPLERS
    from genkit.training import train
    from tests.conftest import call

    run = train(tiny_cfg("train.max_steps=1"))

    def broken(denoiser, x, ts, noise=None, callback=None, progress=False, eta: float = 0.0):
        raise TypeError("a bug in the sampler")
    monkeypatch.setitem(SAMPLERS, "ddim", Component("ddim", broken))
    with pytest.raises(TypeError, match="a bug in the sampler"):
        call(sample_main, ["--checkpoint", str(run.parent.parent), "--sampler", "ddim", "--option", "eta=0.5",
                           "--num", "2", "--out", str(tmp_path / "grid.png")])


def test_adaptive_ode_samples_do_not_depend_on_the_batch():
    """Regression: dopri5 controlled one step size for the whole batch, so a sample changed
    with its batch-mates (by 1.2e-3 here). Solved per sample, it does not; `per_sample=False`
    keeps the batched solve, which does."""
    from genkit.oracles import GaussianMixture
    from genkit.paths import FlowPath
    from genkit.samplers import SAMPLERS, SCHEDULES as GRIDS

    mixture = GaussianMixture(torch.tensor([[-0.6, 0.3], [0.5, 0.5], [0.1, -0.7]]), std=0.15)
    path = FlowPath()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(2))
    ts = GRIDS["log_snr"](path, 10)

    def solve(batch, **options):
        denoiser = Denoiser(mixture.as_net(path, "velocity"), path, "velocity")
        return SAMPLERS["ode"](denoiser, batch, ts, rtol=1e-3, atol=1e-3, **options)
    assert torch.equal(solve(x[:8]), solve(x)[:8])
    assert (solve(x[:8], per_sample=False) - solve(x, per_sample=False)[:8]).abs().max() > 1e-4


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16),
                                              pytest.param("fp16", torch.float16, marks=pytest.mark.slow)])  # fp16: slow on CPUs
def test_half_precision_sampling_uses_a_half_copy_and_stays_close_to_fp32(tiny_cfg, precision, dtype):
    model = tiny_model(tiny_cfg)
    full = model.sample(4, steps=3, progress=False).images
    half = model.sample(4, steps=3, progress=False, precision=precision).images
    assert all(p.dtype == torch.float32 for p in model.net.parameters())  # the model's own weights untouched
    assert all(p.dtype == dtype for p in model.inference_net(dtype).parameters())
    assert model.inference_net(dtype).stem.weight.is_contiguous(memory_format=torch.channels_last)  # the UNet's CPU layout
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    exact = model.denoiser().raw(x, 0.5)
    for denoiser in (model.denoiser(precision=precision), Denoiser(model.net, model.path, model.prediction, half=dtype)):
        error = (denoiser.raw(x, 0.5) - exact).norm() / exact.norm()  # half copy, and autocast over fp32 weights
        assert 0 < error < (0.02 if precision == "bf16" else 0.005)  # fp16 keeps 3 more mantissa bits
    assert 0 < (full - half).abs().mean() < 0.02


def test_full_precision_cpu_sampling_uses_a_channels_last_copy_with_the_same_values(tiny_cfg):
    model = tiny_model(tiny_cfg)
    fast = model.inference_net()
    assert fast is not model.net and fast.stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.net.stem.weight.is_contiguous()  # the model's own weights untouched
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    plain = Denoiser(model.net, model.path, model.prediction).raw(x, 0.5)
    assert torch.allclose(model.denoiser().raw(x, 0.5), plain, atol=1e-5, rtol=1e-4)
    model.to("cpu")
    assert model.inference_net() is not fast  # copies are made again after a move


def test_compiled_sampling_pads_the_last_batch_to_one_shape(tiny_cfg, monkeypatch):
    """With `compile`, every call sees the batch size (one compiled shape), and the padding is dropped."""
    model = tiny_model(tiny_cfg)
    batches = []

    def compile_recording_batches(net):
        def call(x, *args, **kwargs):
            batches.append(x.shape[0])
            return net(x, *args, **kwargs)
        return call
    monkeypatch.setattr(torch, "compile", compile_recording_batches)
    eager = model.sample(6, steps=3, progress=False, batch_size=4)
    padded = model.sample(6, steps=3, progress=False, batch_size=4, compile=True)
    assert set(batches) == {4} and len(batches) == 2 * padded.nfe
    assert len(padded.images) == 6 and torch.equal(eager.noise, padded.noise) and torch.equal(eager.labels, padded.labels)
    assert torch.allclose(eager.images, padded.images, atol=1e-4)  # batch-size-dependent fp32 kernels: ~1e-5
    batches.clear()
    model.sample(3, steps=3, progress=False, batch_size=4, compile=True)  # one batch: nothing to pad
    assert set(batches) == {3}


@pytest.mark.slow  # inductor compiles for about a minute
@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_compiled_sampling_draws_the_eager_samples(tiny_cfg, precision):
    model = tiny_model(tiny_cfg)
    eager = model.sample(6, steps=3, progress=False, precision=precision, batch_size=4)
    compiled = model.sample(6, steps=3, progress=False, precision=precision, batch_size=4, compile=True)
    half = half_dtype(precision, model.device)
    net = model.inference_net(half, compile=True)
    assert net._orig_mod is not model.net and all(p.dtype == (half or torch.float32) for p in net.parameters())
    assert net._orig_mod.stem.weight.is_contiguous(memory_format=torch.contiguous_format if half else torch.channels_last)
    assert torch.equal(eager.noise, compiled.noise) and eager.nfe == compiled.nfe
    error = (eager.images - compiled.images).abs()
    if precision == "no":
        assert error.max() < 1e-4
    else:  # bf16 rounds at other points of the fused kernels: within what bf16 itself costs (the half test)
        assert error.mean() < 0.005, float(error.mean())


def test_precision_auto_follows_the_hardware(tiny_cfg, monkeypatch):
    from genkit.inference import hardware_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # a V100 or T4
    assert hardware_precision(torch.device("cuda")) == "fp16" and hardware_precision(torch.device("mps")) == "fp16"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert half_dtype("auto", torch.device("cpu")) is None and half_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ArgumentError, match="precision: must be one of no, bf16, fp16, auto"):
        tiny_model(tiny_cfg).sample(2, precision="fp8")
