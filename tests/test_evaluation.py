"""Metrics against closed forms and toy manifolds; the feature nets (shipped and trained by
`genkit train-classifier`) and which data each reads; sanity on MNIST."""
import json
import math

import numpy as np

import pytest
import torch

from genkit.config import DataConfig, load_config
from genkit.data import load_images
from genkit.evaluation import Evaluator, class_coverage, fid, frechet_distance, load_feature_net, precision_recall
from genkit.evaluation.classifier import BUNDLED, INFO_FILE, accuracy
from genkit.registry import ArgumentError, ConfigError
from tests.conftest import digit_overrides


def random_spd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_distance_of_identical_gaussians_is_zero():
    cov = random_spd(6, 0)
    assert frechet_distance(torch.ones(6), cov, torch.ones(6), cov) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_diagonal_closed_form():
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    expected = 5.0 + float(((a.sqrt() - b.sqrt()) ** 2).sum())  # |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_the_nonsymmetric_formula():
    """tr (S1 S2)^1/2 = sum of square roots of the (real, positive) eigenvalues of S1 S2."""
    s1, s2 = random_spd(5, 1), random_spd(5, 2)
    mu1, mu2 = torch.zeros(5, dtype=torch.float64), torch.full((5,), 0.5, dtype=torch.float64)
    cross = torch.linalg.eigvals(s1 @ s2).real.sqrt().sum()
    expected = float((mu1 - mu2).square().sum() + torch.trace(s1 + s2) - 2 * cross)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fid_of_shifted_gaussian_samples_approaches_closed_form():
    g = torch.Generator().manual_seed(0)
    d, n = 4, 200_000
    scale = torch.tensor([1.0, 2.0, 0.5, 1.0])
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64) * scale + 1.0
    expected = d * 1.0 + float(((scale - 1) ** 2).sum())  # mean shift 1 per axis; diagonal covariances
    assert fid(x, y) == pytest.approx(expected, abs=0.03)
    assert fid(x, x) == pytest.approx(0, abs=1e-9)


def circle(n: int, start: float = 0.0, end: float = 2 * math.pi, seed: int = 0) -> torch.Tensor:
    angles = start + (end - start) * torch.rand(n, generator=torch.Generator().manual_seed(seed))
    return torch.stack([angles.cos(), angles.sin()], 1)


def test_precision_recall_on_toy_manifolds():
    real = circle(2000, seed=0)
    p, r = precision_recall(real, circle(2000, seed=1))
    assert p > 0.95 and r > 0.95  # the same manifold
    p, r = precision_recall(real, circle(2000, 0, math.pi, seed=2))  # only half of it
    assert p > 0.95 and 0.4 < r < 0.65
    p, r = precision_recall(real, circle(2000, seed=3) + 5.0)  # somewhere else entirely
    assert p == 0 and r == 0
    with pytest.raises(ValueError, match="more than 3 points"):
        precision_recall(real, real[:3])


def test_class_coverage_extremes():
    uniform = torch.eye(10).repeat(5, 1)  # 50 certain samples, 5 per class
    assert class_coverage(uniform) == {"class_entropy": pytest.approx(1.0), "confident_fraction": 1.0,
                                       "classes_hit": 10}
    collapsed = torch.full((20, 10), 0.05)
    collapsed[:, 3] = 0.55  # every sample the same class, none confidently
    assert class_coverage(collapsed) == {"class_entropy": 0.0, "confident_fraction": 0.0, "classes_hit": 1}


@pytest.fixture(scope="module")
def mnist_evaluator():
    return Evaluator(DataConfig(), progress=False)


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_committed_classifier_reaches_99_percent_on_the_test_split():
    test = load_images(DataConfig(), split="test", progress=False)
    net, info = load_feature_net(BUNDLED / "mnist")
    assert accuracy(net, test.images, test.labels) == info.test_accuracy >= 0.99


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_real_digits_score_near_zero_and_noise_scores_badly(mnist_evaluator):
    floor = mnist_evaluator.floor(1000)
    noise = mnist_evaluator.score(torch.rand(1000, 1, 32, 32))
    assert floor["fid"] < 5 and floor["precision"] > 0.6 and floor["recall"] > 0.6
    assert floor["label_accuracy"] > 0.98 and floor["class_entropy"] > 0.99
    assert noise["fid"] > 50 * floor["fid"] and noise["precision"] < 0.05


@pytest.mark.slow  # the default set keeps under 6 minutes on CI's 2 cores (#36)
def test_evaluator_takes_28_px_images(mnist_evaluator):
    train = load_images(DataConfig(image_size=28), split="train", limit=500, progress=False)
    scores = mnist_evaluator.score(train.images.float() / 255, train.labels)
    assert scores["label_accuracy"] > 0.97 and scores["fid"] < 20


def test_eval_cli_writes_json_table(tmp_path, digits):
    from genkit.cli import eval_main
    from genkit.training import train

    cfg = load_config(None, digit_overrides(digits, tmp_path / "run") + ["train.max_steps=2"])
    train(cfg)
    out = tmp_path / "eval.json"
    code = eval_main(["--checkpoint", cfg.output_dir, "--num", "8", "--steps", "2", "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0 and report["num"] == 8 and report["nfe"] > 0
    assert set(report["metrics"]) >= {"fid", "precision", "recall", "class_entropy", "label_accuracy"}
    # real digits score far better than a net trained for 2 steps (FID is clamped at 0, so `>= 0` proves nothing)
    assert report["real_data_floor"]["fid"] < report["metrics"]["fid"] / 2
    assert "guidance_interval" not in report  # guided at every level, if at all
    code = eval_main(["--checkpoint", cfg.output_dir, "--num", "8", "--steps", "2", "--json", str(out),
                      "--guidance", "2", "--guidance-interval", "0.28", "2.9"])
    guided = json.loads(out.read_text())
    assert code == 0 and guided["guidance"] == 2 and guided["guidance_interval"] == [0.28, 2.9]
    assert guided["metrics"]["fid"] != report["metrics"]["fid"]


def test_plot_loss_from_a_run(tmp_path, tiny_cfg):
    from genkit.cli import main
    from genkit.training import train

    cfg = tiny_cfg()
    train(cfg)
    out = tmp_path / "loss.png"
    assert main(["plot-loss", cfg.output_dir, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot-loss", str(tmp_path / "nothing")]) == 2


def test_metrics_refuse_data_that_no_feature_net_reads(imagefolder, digits, tmp_path):
    """Regression: random 64x64 RGB noise scored FID 0.74 against itself in MNIST features. Data that
    no feature net reads (agrees with its labels, or is confident on it, at 90% of the net's rate on
    its own test split) are refused in one line that names the command to train one; MNIST digits
    in a folder of their own are read by genkit's MNIST net."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (tmp_path / split / "0").mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / split / "0" / f"{i}.png")
    with pytest.raises(ConfigError, match="no feature net reads .* is confident on .*genkit train-classifier"):
        Evaluator(DataConfig(path=str(tmp_path), image_size=64, channels=3), progress=False)
    with pytest.raises(ConfigError, match="no feature net reads .*mnist: it agrees with"):
        Evaluator(DataConfig(path=str(imagefolder), image_size=16, fit="resize"), progress=False)
    with pytest.raises(ConfigError, match="no feature net reads .* is confident on"):
        Evaluator(DataConfig(path=str(tmp_path), image_size=64, channels=1, label_column=""), progress=False)
    evaluator = Evaluator(DataConfig(path=str(digits), image_size=32, fit="pad"), progress=False)
    assert evaluator.test_features.shape[0] == 50 and evaluator.feature_net == BUNDLED / "mnist"
    with pytest.raises(ArgumentError, match="holds no feature net"):
        Evaluator(DataConfig(path=str(digits), image_size=32, fit="pad"), feature_net=tmp_path, progress=False)


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """RGB 24x24 images in class folders 0..2 (90 train, 30 test): noise tinted red, green or blue by
    class, which no grey feature net tells apart."""
    from PIL import Image

    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(1)
    for i in range(120):
        label, split = i % 3, "train" if i < 90 else "test"
        img = (rng.random((24, 24, 3)) * 120).astype(np.uint8)
        img[..., label] += 120
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i}.png")
    return root


def test_train_classifier_makes_a_feature_net_that_eval_picks_for_its_data(colours, tmp_path):
    """`genkit train-classifier --data DIR` detects RGB, trains, records its test accuracy and writes
    DIR/feature_net; the Evaluator then scores that data in it (no bundled net reads it): the net
    reads each image's class from its colour, and one class alone scores far worse than all three."""
    from genkit.cli import main

    cfg = DataConfig(path=str(colours), image_size=24, channels=3)
    with pytest.raises(ConfigError, match="genkit train-classifier"):
        Evaluator(cfg, progress=False)
    assert main(["train-classifier", "--data", str(colours), "--image-size", "24", "--epochs", "8"]) == 0
    net, info = load_feature_net(colours / "feature_net")
    assert (info.channels, info.num_classes, info.classes) == (3, 3, ["0", "1", "2"]) and info.test_accuracy > 0.9
    evaluator = Evaluator(cfg, progress=False)
    assert evaluator.feature_net == colours / "feature_net"
    train = load_images(cfg, split="train", progress=False)
    real = evaluator.score(train.images.float() / 255, train.labels)
    rotated = evaluator.score(train.images.float().roll(1, dims=1) / 255, train.labels)  # red -> green -> blue
    red = evaluator.score(train.images[train.labels == 0].float() / 255)  # one class of three
    assert real["label_accuracy"] > 0.9 and rotated["label_accuracy"] < 0.1
    assert red["classes_hit"] == 1 and red["fid"] > 10 * real["fid"] and real["class_entropy"] > 0.99
    unlabelled = tmp_path / "unlabelled"
    assert main(["train-classifier", "--data", str(colours), "--label-column", "none", "--out", str(unlabelled)]) == 2
    assert not (unlabelled / INFO_FILE).exists()


@pytest.mark.slow  # two nets read the 10,000 test garments: 20 s
def test_fashion_mnist_is_scored_in_its_own_net_and_refused_by_the_digit_net():
    """The bundled Fashion-MNIST is read by the Fashion-MNIST net genkit ships, whose record holds its
    test accuracy; asked to score garments, the MNIST net refuses (it agrees with few of the labels)."""
    cfg = DataConfig(path="data/fashion_mnist")
    with pytest.raises(ConfigError, match="no feature net reads .*mnist: it agrees with"):
        Evaluator(cfg, feature_net=BUNDLED / "mnist", progress=False)
    evaluator = Evaluator(cfg, progress=False)
    assert evaluator.feature_net == BUNDLED / "fashion_mnist" and evaluator.info.test_accuracy > 0.9
    assert evaluator.info.classes[0] == "T-shirt/top" and evaluator.info.num_classes == 10


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """A randomly initialised FID Inception saved as a state dict, standing in for the weights file a
    user supplies (nothing is downloaded)."""
    from genkit.evaluation.inception import FIDInception

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
    torch.save({k: v for k, v in FIDInception().state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    return path


def test_fid_inception_loads_only_its_own_weights(random_inception, tmp_path):
    """The weights load without running code (`weights_only`); a missing file, a pickle of objects
    and another network's weights are refused naming the argument; features are [N, 2048] for grey
    or RGB images of any size, 8-bit or in [0, 1]."""
    from genkit.evaluation.inception import InceptionMetrics, load_inception

    state = torch.load(random_inception, weights_only=True)
    with pytest.raises(ArgumentError, match="inception_weights: no file"):
        load_inception(tmp_path / "absent.pth")
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ArgumentError, match="does not hold the FID Inception's weights"):
        load_inception(tmp_path / "other.pth")
    torch.save({**state, "extra": math.pi}, tmp_path / "objects.pth")
    with pytest.raises(ArgumentError, match="does not hold"):
        load_inception(tmp_path / "objects.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ArgumentError, match="not a state dict of tensors"):
        load_inception(tmp_path / "text.pth")
    metrics = InceptionMetrics(random_inception, progress=False)
    grey = torch.rand(2, 1, 28, 28)
    rgb_u8 = (grey.expand(-1, 3, -1, -1) * 255).round().to(torch.uint8)
    assert torch.equal(metrics.features(grey), metrics.features(rgb_u8)) and metrics.features(grey).shape == (2, 2048)


def test_inception_scores_agree_with_closed_forms_and_genkit_fid():
    """FID and KID from torchmetrics on given features: a set against itself scores FID 0 and KID
    near 0; two sets whose sample means and covariances are exactly those of N(0, I) and
    N(1/2, diag(scale^2)) score the closed-form Frechet distance between those Gaussians, as genkit's
    own `fid` does on the same features, and a KID far from 0."""
    from genkit.evaluation.inception import inception_scores

    def white(n: int, d: int, g: torch.Generator) -> torch.Tensor:
        """n draws in d dimensions whose sample mean is 0 and unbiased sample covariance the identity."""
        z = torch.randn(n, d, generator=g, dtype=torch.float64)
        z = z - z.mean(0)
        return z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / (n - 1))).T

    g = torch.Generator().manual_seed(0)
    d, n = 8, 3000
    scale = torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    x, y = white(n, d, g), white(n, d, g) * scale + 0.5
    same = inception_scores(x[:2000], x[:2000], kid_subset=500, kid_subsets=10)
    assert same["fid"] == pytest.approx(0, abs=1e-6) and same["precision"] == 1.0
    apart = inception_scores(y, x, kid_subset=1000, kid_subsets=10)
    closed = d * 0.25 + float(((scale - 1) ** 2).sum())  # |m1 - m2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))
    assert apart["fid"] == pytest.approx(closed, rel=1e-6) and apart["fid"] == pytest.approx(fid(y, x), rel=1e-6)
    assert apart["kid"] > 50 * abs(same["kid"]) and 0 <= apart["precision"] < 1  # KID's subsets are random


@pytest.mark.slow  # 130 Inception evaluations at 299 px
def test_eval_reports_inception_metrics_and_caches_the_reference(tmp_path, digits, random_inception):
    """`genkit eval --inception-weights` adds FID, KID and precision/recall in Inception features for the
    samples and as many test images, against the whole training split, whose features are cached once
    as an .npz with the ADM suite's mu and sigma."""
    from genkit.cli import eval_main
    from genkit.training import train

    cfg = load_config(None, digit_overrides(digits, tmp_path / "run") + ["train.max_steps=2"])
    train(cfg)
    out, cache = tmp_path / "eval.json", tmp_path / "reference.npz"
    args = ["--checkpoint", cfg.output_dir, "--num", "8", "--steps", "2", "--json", str(out),
            "--inception-weights", str(random_inception), "--inception-reference", str(cache)]
    assert eval_main(args) == 0
    report = json.loads(out.read_text())["inception"]
    assert report["reference"]["images"] == 100 and report["real_data_floor"]["images"] == 8
    assert set(report) >= {"fid", "kid", "kid_std", "precision", "recall"}
    with np.load(cache) as stored:
        assert stored["mu"].shape == (2048,) and stored["sigma"].shape == (2048, 2048)
        assert stored["features"].shape == (100, 2048)
    written = cache.stat().st_mtime_ns
    assert eval_main(args) == 0 and cache.stat().st_mtime_ns == written  # read, not recomputed
    assert json.loads(out.read_text())["inception"]["fid"] == pytest.approx(report["fid"], rel=1e-5)
