"""Autoregressive models: causality by gradients, exact NLL against the sampler's own
conditionals, naive and cached sampling drawing the same pixels, Bayes-rule classification."""
import json
import math

import pytest
import torch

import genkit
from genkit.config import load_config
from genkit.nets.pixelcnn import PixelCNNConfig
from genkit.methods.autoregressive import Autoregressive, binarize, discretize, log_likelihood, pixel_log_probs
from genkit.nets import MADE, PixelCNN
from genkit.inference import AutoregressiveModel
from genkit.samplers.autoregressive import conditionals, draw, sample
from genkit.training import train
from genkit.cli import eval_main, sample_main
from tests.conftest import call, tiny_overrides
from tests.conftest import run_script as run

# (input kernel, kernel, layers): the first three cover a whole 5x5 image with their receptive field
PIXELCNN_SHAPES = [(3, 3, 4), (7, 5, 1), (1, 3, 4), (3, 1, 2)]


def make_net(kind: str, levels: int = 2, num_classes: int = 0, size: int = 5, shape=(3, 3, 4)) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "pixelcnn":
        k_in, k, layers = shape
        cfg = PixelCNNConfig(channels=8, num_layers=layers, kernel_size=k, input_kernel_size=k_in, head_channels=8)
        net = PixelCNN(cfg, levels, num_classes)
    else:
        net = MADE(size, (12, 12) if kind == "made" else (), num_classes)
    return net.double().eval()


def dependencies(net, size: int, trials: int = 3) -> torch.Tensor:
    """deps[i, j, k, l]: whether some output logit at pixel (i, j) has a non-zero gradient with
    respect to input pixel (k, l), on any of a few random inputs."""
    deps = torch.zeros(size, size, size, size, dtype=torch.bool)
    gen = torch.Generator().manual_seed(1)
    for _ in range(trials):
        x = torch.rand(1, 1, size, size, generator=gen, dtype=torch.float64) * 2 - 1
        mix = torch.rand(net(x).shape[1], generator=gen, dtype=torch.float64) + 0.5  # a random mix of the K logits
        jac = torch.autograd.functional.jacobian(lambda v: torch.einsum("bkhw,k->hw", net(v), mix), x)  # [H, W, 1, 1, H, W]
        deps |= jac[:, :, 0, 0] != 0
    return deps


def raster_before(size: int) -> torch.Tensor:
    order = torch.arange(size * size).reshape(size, size)
    return order[:, :, None, None] > order[None, None]  # [i, j, k, l]: (k, l) comes before (i, j)


@pytest.mark.parametrize("levels", [2, 256])
@pytest.mark.parametrize("shape", PIXELCNN_SHAPES)
def test_pixelcnn_output_depends_on_exactly_the_earlier_pixels(shape, levels):
    deps = dependencies(make_net("pixelcnn", levels, shape=shape), 5)
    before = raster_before(5)
    assert not (deps & ~before).any(), "an output sees its own or a later pixel"
    if shape[1] > 1:  # kernel 1 gated layers cannot widen the field; the others cover the image
        assert torch.equal(deps, before), "blind spot: an earlier pixel does not reach the output"


def test_pixelcnn_is_causal_on_an_image_wider_than_its_receptive_field():
    deps = dependencies(make_net("pixelcnn", shape=(3, 3, 2)), 9, trials=1)
    assert not (deps & ~raster_before(9)).any()
    assert deps[8, 8, 7, 8] and deps[8, 8, 8, 7] and not deps[8, 8, 0, 0]  # near yes, far outside no


@pytest.mark.parametrize("kind", ["made", "fvsbn"])
def test_made_and_fvsbn_depend_on_exactly_the_earlier_pixels(kind):
    assert torch.equal(dependencies(make_net(kind), 5), raster_before(5))


@pytest.mark.parametrize("kind", ["pixelcnn", "made", "fvsbn"])
def test_class_label_reaches_every_pixel(kind):
    net = make_net(kind, num_classes=3)
    x = torch.zeros(2, 1, 5, 5, dtype=torch.float64)
    a, b = net(x, torch.tensor([0, 0])), net(x, torch.tensor([1, 2]))
    assert ((a - b).abs().sum(1)[1] > 0).all()  # every pixel's logits move, the first one included


@pytest.mark.parametrize("kind, levels, num_classes", [
    ("pixelcnn", 2, 3), ("pixelcnn", 256, 0), ("made", 2, 3), ("fvsbn", 2, 0)])
def test_nll_is_the_sum_of_the_samplers_conditionals(kind, levels, num_classes):
    net = make_net(kind, levels, num_classes)
    pixels = torch.randint(0, levels, (3, 1, 5, 5))
    y = torch.tensor([0, 1, 2]) if num_classes else None
    full = log_likelihood(net, pixels, y, levels)
    for how in (["cached", "naive"] if kind == "pixelcnn" else ["naive"]):
        per_pixel = conditionals(net, pixels, y, levels, how)  # [B, H, W]
        torch.testing.assert_close(per_pixel.flatten(1).sum(1), full.double(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("levels, num_classes", [(2, 4), (256, 0)])
def test_cached_and_naive_sampling_draw_identical_images(levels, num_classes):
    net = make_net("pixelcnn", levels, num_classes, shape=(5, 3, 3))
    uniforms = torch.rand(6, 7, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.arange(6) % num_classes if num_classes else None
    naive, cached = (sample(net, uniforms, y, levels, how) for how in ("naive", "cached"))
    assert torch.equal(naive, cached)
    assert len(naive.unique()) > 1  # a real draw, not a constant image


def test_draw_inverts_the_cdf():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    n = 1000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # an even grid of uniforms
    counts = torch.bincount(draw(probs.log().expand(n, 4), u), minlength=4)
    assert counts.tolist() == [100, 200, 300, 400]
    ones = draw(torch.full((n, 1), math.log(0.3 / 0.7), dtype=torch.float64), u).sum()
    assert ones == 300


def test_pixel_log_probs_of_uniform_logits_are_closed_form():
    pixels = torch.randint(0, 2, (2, 1, 4, 4))
    assert torch.allclose(pixel_log_probs(torch.zeros(2, 1, 4, 4), pixels), torch.tensor(-math.log(2)))
    grey = torch.randint(0, 256, (2, 1, 4, 4))
    assert torch.allclose(pixel_log_probs(torch.zeros(2, 256, 4, 4), grey), torch.tensor(-math.log(256)))
    logits = torch.tensor([[[[1.5]]]])
    assert torch.allclose(pixel_log_probs(logits, torch.ones(1, 1, 1, 1, dtype=torch.long)),
                          torch.tensor(math.log(torch.sigmoid(torch.tensor(1.5)).item())))


def test_binarization_is_dynamic_in_training_and_fixed_for_evaluation():
    grey = torch.full((200_000,), 51, dtype=torch.uint8)  # p = 0.2
    assert abs(binarize(grey).double().mean().item() - 0.2) < 0.005
    assert binarize(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [0, 1]
    images = torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8)
    assert torch.equal(discretize(images, 2, seed=5), discretize(images, 2, seed=5))
    assert not torch.equal(discretize(images, 2, seed=5), discretize(images, 2, seed=6))
    assert torch.equal(discretize(images, 256), images.long())
    method = Autoregressive(load_config(None, ["method.name=autoregressive", "model.name=pixelcnn",
                                               "sample.sampler=cached"]).method)
    x0 = images.float() / 127.5 - 1
    draws = [method.pixels(x0, torch.Generator().manual_seed(s)) for s in range(2)]
    assert not torch.equal(*draws) and set(draws[0].unique().tolist()) <= {0, 1}


class ClassBiasNet(torch.nn.Module):
    """A known p(x | y): every pixel independently Bernoulli(sigmoid(bias[y]))."""

    def __init__(self, bias):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor(bias, dtype=torch.float64))

    def forward(self, x, y):
        return self.bias[y][:, None, None, None].expand(len(x), 1, *x.shape[2:]).to(x.dtype)


def test_evaluate_applies_bayes_rule():
    cfg = load_config(None, ["method.name=autoregressive", "model.name=fvsbn", "sample.sampler=naive",
                             "model.num_classes=2", "data.image_size=2"])
    model = AutoregressiveModel(cfg, ClassBiasNet([-2.0, 2.0, 0.0]))
    images = torch.tensor([0, 0, 0, 0, 255, 255, 255, 0], dtype=torch.uint8).reshape(2, 1, 2, 2)
    prior = torch.tensor([0.25, 0.75])
    report = model.evaluate(images, torch.tensor([0, 1]), prior, progress=False)
    ones = torch.tensor([0.0, 3.0])  # ones per image
    log_sig = torch.nn.functional.logsigmoid
    log_pxy = torch.stack([ones * log_sig(torch.tensor(b)) + (4 - ones) * log_sig(-torch.tensor(b))
                           for b in (-2.0, 2.0)], 1)  # [image, class]
    log_px = (log_pxy + prior.log()).logsumexp(1)
    assert report["nll_nats"] == pytest.approx(-log_px.mean().item(), rel=1e-6)
    assert report["conditional_nll_nats"] == pytest.approx(-(log_pxy[0, 0] + log_pxy[1, 1]).item() / 2, rel=1e-6)
    assert report["classification_accuracy"] == 1.0
    assert report["bits_per_dim"] == pytest.approx(report["nll_nats"] / (4 * math.log(2)))


def ar_overrides(kind: str, levels: int = 2) -> list[str]:
    return ["method.name=autoregressive", f"model.name={kind}", f"method.autoregressive.levels={levels}",
            f"sample.sampler={'cached' if kind == 'pixelcnn' else 'naive'}", "data.image_size=8",
            "model.pixelcnn.channels=16", "model.pixelcnn.num_layers=2", "model.pixelcnn.head_channels=16",
            "model.made.hidden=[32]", "train.lr=0.01", "method.p_uncond=0"]


@pytest.mark.parametrize("kind, levels", [("pixelcnn", 2), ("pixelcnn", 256), ("made", 2), ("fvsbn", 2)])
def test_training_lowers_the_nll_and_logs_nats_and_bits(tiny_cfg, kind, levels):
    cfg = tiny_cfg(*ar_overrides(kind, levels), "train.max_steps=30", "train.log_every=10",
                   "train.checkpoint_every=0", "train.warmup_steps=5")
    final = train(cfg)
    log = [json.loads(line) for line in (final.parent.parent / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.8 * log[0]["loss"]
    for row in log:
        assert row["nats_per_image"] == pytest.approx(row["loss"] * 64)
        assert row["bits_per_dim"] == pytest.approx(row["loss"] / math.log(2))
    model = genkit.load(final)
    assert isinstance(model, AutoregressiveModel)
    images = model.sample(4, seed=0, progress=False).images
    assert images.shape == (4, 1, 8, 8) and images.min() >= 0 and images.max() <= 1


def test_conditional_fvsbn_classifies_its_training_digits(tiny_cfg):
    """The fixture's classes put a bright square in different corners; a class-conditional
    FVSBN learns them, and Bayes' rule recovers the class from log p(x | y) alone."""
    cfg = tiny_cfg(*ar_overrides("fvsbn"), "data.image_size=16", "train.max_steps=60", "train.checkpoint_every=0",
                   "train.mixed_precision=no")
    model = genkit.load(train(cfg))
    from genkit.data import load_images

    data = load_images(cfg.data, progress=False)
    report = model.evaluate(data.images, data.labels, progress=False)
    assert report["classification_accuracy"] >= 0.9
    assert report["conditional_nll_nats"] < report["nll_nats"] + math.log(4) + 1e-6


@pytest.fixture(scope="module")
def pixelcnn_run(imagefolder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ar") / "run"
    train(load_config(None, [*tiny_overrides(imagefolder, out), *ar_overrides("pixelcnn"), "train.max_steps=2"]))
    return out


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_sample_cli_cached_and_naive_write_the_same_grid(pixelcnn_run, tmp_path):
    grids = []
    for how in ("cached", "naive"):
        grids.append(tmp_path / f"{how}.png")
        result = run("sample.py", "--checkpoint", str(pixelcnn_run), "--out", str(grids[-1]), "--num", "4",
                     "--sampler", how, "--class-label", "2")
        assert result.returncode == 0, result.stderr[-2000:]
    assert grids[0].read_bytes() == grids[1].read_bytes()


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_eval_cli_reports_nll_and_classification(pixelcnn_run, tmp_path):
    out = tmp_path / "eval.json"
    result = run("eval.py", "--checkpoint", str(pixelcnn_run), "--num", "8", "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["images"] == 8 and report["nll_nats"] > 0 and 0 <= report["classification_accuracy"] <= 1
    assert "nll_nats" in result.stdout


def test_eval_cli_refuses_sampling_flags_for_autoregressive_models(pixelcnn_run):
    code, stderr = call(eval_main, ["--checkpoint", str(pixelcnn_run), "--num", "2", "--class-label", "0"])
    assert code == 2 and "--class-label: does not apply" in stderr, stderr


@pytest.mark.parametrize("args, needle", [
    (["--steps", "5"], "--steps: does not apply"),
    (["--sampler", "ddim"], "--sampler: unknown sampler 'ddim'; choose from cached, naive"),
    (["--option", "eta=1"], "--option eta: does not apply to autoregressive models"),
    (["--compile"], "--compile: does not apply to autoregressive models"),
])
def test_sample_cli_refuses_diffusion_flags_for_autoregressive_models(pixelcnn_run, args, needle):
    code, stderr = call(sample_main, ["--checkpoint", str(pixelcnn_run), "--num", "2", *args])
    assert code == 2 and needle in stderr, stderr


@pytest.mark.parametrize("overrides, needle", [
    (["method.name=autoregressive"], "does not train model.name=unet"),
    (["model.name=pixelcnn"], "does not train model.name=pixelcnn"),
    (["method.name=autoregressive", "model.name=made", "sample.sampler=naive", "method.autoregressive.levels=256"],
     "binary pixels"),
    (["method.name=autoregressive", "model.name=pixelcnn"], "sample.sampler: unknown sampler 'fitted'; choose from cached, naive"),
    (["method.name=autoregressive", "model.name=made", "sample.sampler=cached"], "cached sampling needs a net with a cache"),
    (["method.name=autoregressive", "model.name=pixelcnn", "sample.sampler=cached", "model.pixelcnn.kernel_size=4"],
     "positive odd number"),
    (["method.name=autoregressive", "model.name=pixelcnn", "sample.sampler=cached", "method.autoregressive.levels=3"],
     "is not one of 2, 256"),
])
def test_inconsistent_autoregressive_configs_are_refused(overrides, needle):
    with pytest.raises(genkit.ConfigError, match=needle):
        load_config(None, overrides)


@pytest.mark.parametrize("recipe", [pytest.param("pixelcnn_mnist", marks=pytest.mark.slow),
                                    pytest.param("made_mnist", marks=pytest.mark.slow),
                                    pytest.param("fvsbn_mnist", marks=pytest.mark.slow)])
def test_recipes_train_from_the_cli_on_mnist(recipe, tmp_path):
    result = run("train.py", "--config", f"configs/{recipe}.yaml", "train.max_steps=2", "train.log_every=1",
                 f"output_dir={tmp_path}", "train.sample_every=2")
    assert result.returncode == 0, result.stderr[-2000:]
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 < first["nats_per_image"] < 1000  # a coin per pixel would be 784 ln 2 = 543
    assert (tmp_path / "samples" / "step-000002.png").is_file()
