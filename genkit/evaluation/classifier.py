"""Feature nets: small classifiers whose penultimate activations are the feature space of genkit's
metrics (FID, precision/recall, class coverage), one per labelled data set.

A feature net is a directory: `feature_net.safetensors` (its weights, loaded without pickle) and
`feature_net.json` (its geometry, the data it was trained on, and how well it reads that data's
test split). genkit ships nets for its bundled MNIST and Fashion-MNIST (`feature_nets/`);
`train_feature_net` (the command `genkit train-classifier`) trains one for any labelled data set and
`save_feature_net` writes it beside the data (`DATA/feature_net/`), where `find_feature_net` looks.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from genkit.config import DataConfig
from genkit.data import load_images, open_split, resolve_data_path
from genkit.registry import ArgumentError, ConfigError

BUNDLED = Path(__file__).with_name("feature_nets")  # one directory per bundled data set
WEIGHTS_FILE, INFO_FILE = "feature_net.safetensors", "feature_net.json"
BESIDE_DATA = "feature_net"  # where a data set's own net lives: DATA/feature_net/
INPUT_SIZE = 32  # images are padded (smaller) or resized (larger) to 32 x 32
FEATURE_DIM = 128


@dataclass
class FeatureNetInfo:
    """What `feature_net.json` records: the net's geometry, the data it was trained on (`data`: the
    `DataConfig` fields), its top-1 accuracy and mean top-class probability on that data's test split
    (what `genkit.evaluation.Evaluator` compares other data with), and how it was trained."""

    channels: int = 1
    num_classes: int = 10
    classes: list[str] = field(default_factory=list)  # names of the classes, where the data set has them
    data: dict = field(default_factory=dict)
    test_accuracy: float = math.nan
    test_confidence: float = math.nan
    epochs: int = 0
    seed: int = 0


class FeatureNet(nn.Module):
    """Three conv stages (32 -> 16 -> 8 -> 4 px) and a 128-d feature layer; takes images in [0, 1]."""

    def __init__(self, channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.channels = channels

        def stage(c_in: int, c_out: int, convs: int) -> list[nn.Module]:
            layers = []
            for i in range(convs):
                layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.ReLU()]
            return layers + [nn.MaxPool2d(2)]

        self.body = nn.Sequential(*stage(channels, 32, 2), *stage(32, 64, 2), *stage(64, 128, 1), nn.Flatten())
        self.features = nn.Linear(128 * 4 * 4, FEATURE_DIM)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] in [0, 1] of any size and 1 or 3 channels -> [B, channels, 32, 32] in
        [-1, 1]: grey repeated to RGB or RGB averaged to grey as the net needs; smaller images centred
        on a black canvas (as 28 px MNIST was for training), larger ones resized."""
        if images.shape[1] != self.channels:
            images = images.mean(1, keepdim=True).expand(-1, self.channels, -1, -1)
        h, w = images.shape[-2:]
        if h <= INPUT_SIZE and w <= INPUT_SIZE:
            top, left = (INPUT_SIZE - h) // 2, (INPUT_SIZE - w) // 2
            images = F.pad(images, [left, INPUT_SIZE - w - left, top, INPUT_SIZE - h - top])
        else:
            images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True,
                                   align_corners=False)
        return images * 2 - 1

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (before the ReLU): [B, C, H, W] -> [B, 128]."""
        return self.features(self.body(self.prepare(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits [B, num_classes]."""
        return self.head(self.dropout(F.relu(self.embed(images))))


def save_feature_net(net: FeatureNet, directory: str | Path, info: FeatureNetInfo) -> Path:
    """Write `net` and `info` to `directory` (created), the weights first: `feature_net.json` marks a
    complete net."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(directory / WEIGHTS_FILE))
    (directory / INFO_FILE).write_text(json.dumps(asdict(info), indent=2) + "\n")
    return directory


def load_feature_net(directory: str | Path) -> tuple[FeatureNet, FeatureNetInfo]:
    """The net stored in `directory` (see the module), in eval mode, with its record."""
    directory = Path(directory)
    if not (directory / INFO_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{directory} holds no feature net ({INFO_FILE} and {WEIGHTS_FILE}); "
                                f"train one with `genkit train-classifier`")
    info = FeatureNetInfo(**json.loads((directory / INFO_FILE).read_text()))
    net = FeatureNet(info.channels, info.num_classes)
    net.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    return net.eval(), info


def bundled_feature_nets() -> dict[str, Path]:
    """name -> directory of each net genkit ships (`mnist`, `fashion_mnist`)."""
    return {d.name: d for d in sorted(BUNDLED.iterdir()) if (d / INFO_FILE).is_file()}


def feature_nets_for(data_path: str | Path) -> list[Path]:
    """The feature nets that may fit the data set at `data_path` (resolved: a local directory), most
    specific first: its own (`DATA/feature_net/`), then the bundled net of the same name
    (`data/fashion_mnist` -> `fashion_mnist`), then the other bundled nets. Which of them reads the
    data is for the caller to check (`genkit.evaluation.Evaluator`)."""
    data_path = Path(data_path)
    own = data_path / BESIDE_DATA
    bundled = bundled_feature_nets()
    named = bundled.pop(data_path.resolve().name, None) if data_path.exists() else None
    return [d for d in ([own] if (own / INFO_FILE).is_file() else []) + ([named] if named else []) + list(bundled.values())]


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels (zero fill): [B, C, H, W] -> same."""
    b, _, h, w = images.shape
    padded = F.pad(images, [max_shift] * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


@torch.no_grad()
def read_split(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor | None,
               batch_size: int = 1000) -> tuple[float, float]:
    """(top-1 accuracy, or nan without labels; mean top-class probability) of `net` on uint8 images
    [N, C, H, W]."""
    correct, confidence = 0, 0.0
    for i in range(0, len(images), batch_size):
        probs = net(images[i:i + batch_size].float() / 255).softmax(1)
        confidence += probs.max(1).values.double().sum().item()
        if labels is not None:
            correct += (probs.argmax(1) == labels[i:i + batch_size]).sum().item()
    return (correct / len(images) if labels is not None else math.nan), confidence / len(images)


def accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy on uint8 images [N, C, H, W]."""
    return read_split(net, images, labels, batch_size)[0]


def train_feature_net(images: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None,
                      epochs: int = 4, batch_size: int = 128, lr: float = 2e-3, seed: int = 0, hflip: bool = False,
                      progress: bool = True) -> FeatureNet:
    """A feature net for uint8 images [N, C, H, W] and labels [N]: AdamW with a cosine schedule, label
    smoothing 0.05, +-2 px shifts (and horizontal flips with `hflip`), bf16 autocast on CPUs that have it."""
    if labels is None:
        raise ValueError("a feature net is a classifier: the data set needs labels")
    num_classes = num_classes or int(labels.max()) + 1
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = FeatureNet(images.shape[1], num_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)
    per_epoch = max(len(images) // batch_size, 1)
    steps = epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / steps, 1))))
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()  # CPUs without it (no AVX-512/AMX) emulate bf16, 20x slower
    net.train()
    bar = tqdm(total=steps, desc="feature net", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for i in range(per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            x = random_shift(images[idx].float() / 255, 2, generator)
            if hflip:
                x = torch.where((torch.rand(len(idx), generator=generator) < 0.5)[:, None, None, None], x.flip(-1), x)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(net(x).float(), labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return net.eval()


def detect_channels(data: DataConfig) -> int:
    """1 if the first images of `data`'s training split are grey (read as RGB, their three channels
    agree), else 3."""
    first = load_images(dataclasses.replace(data, channels=3), split="train", limit=64, progress=False).images
    return 1 if bool((first == first[:, :1]).all()) else 3


def fit_feature_net(data: DataConfig, directory: str | Path | None = None, epochs: int = 4, seed: int = 0,
                    progress: bool = True) -> tuple[Path, FeatureNetInfo]:
    """Train a feature net on `data`'s training split (`train_feature_net`, horizontal flips where
    `data.hflip`), measure it on the test split, and save it to `directory` (default: beside the data,
    `DATA/feature_net/`, where `feature_nets_for` finds it). Returns (directory, its record)."""
    local = Path(resolve_data_path(data.path))
    if directory is None:
        if not local.is_dir():
            raise ArgumentError("directory", f"{data.path} is not a local directory to keep its feature net beside; "
                                             f"name one")
        directory = local / BESIDE_DATA
    train, test = (load_images(data, split=split, progress=progress) for split in ("train", "test"))
    if train.labels is None or test.labels is None:
        raise ConfigError(f"data.label_column: a feature net is a classifier, and {data.path} has no "
                          f"'{data.label_column}' labels in both splits")
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    net = train_feature_net(train.images, train.labels, num_classes, epochs=epochs, seed=seed, hflip=data.hflip,
                            progress=progress)
    test_accuracy, test_confidence = read_split(net, test.images, test.labels)
    label = open_split(str(local) if local.exists() else data.path, "train").features.get(data.label_column)
    info = FeatureNetInfo(channels=data.channels, num_classes=num_classes, classes=list(getattr(label, "names", [])),
                          data=dataclasses.asdict(data), test_accuracy=test_accuracy, test_confidence=test_confidence,
                          epochs=epochs, seed=seed)
    return save_feature_net(net, directory, info), info
