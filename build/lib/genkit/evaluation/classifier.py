"""A small MNIST classifier whose penultimate activations are the feature space of the metrics.

Trained by `scripts/train_classifier.py` (seeded, about 4 minutes on 2 CPU cores); the weights
ship with the package as safetensors and load without pickle.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

WEIGHTS = Path(__file__).with_name("mnist_classifier.safetensors")
INPUT_SIZE = 32  # MNIST padded to 32 x 32, as the generative recipes see it
FEATURE_DIM = 128


class MNISTClassifier(nn.Module):
    """Three conv stages (32 -> 16 -> 8 -> 4 px) and a 128-d feature layer; takes images in [0, 1]."""

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def stage(c_in: int, c_out: int, convs: int) -> list[nn.Module]:
            layers = []
            for i in range(convs):
                layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.ReLU()]
            return layers + [nn.MaxPool2d(2)]

        self.body = nn.Sequential(*stage(1, 32, 2), *stage(32, 64, 2), *stage(64, 128, 1), nn.Flatten())
        self.features = nn.Linear(128 * 4 * 4, FEATURE_DIM)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] in [0, 1] of any size -> grey [B, 1, 32, 32] in [-1, 1]: smaller
        images are centred on a black canvas (as 28 px MNIST was for training), larger ones resized."""
        if images.shape[1] != 1:
            images = images.mean(1, keepdim=True)
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
        """Class logits [B, 10]."""
        return self.head(self.dropout(F.relu(self.embed(images))))


def load_classifier(path: str | Path = WEIGHTS) -> MNISTClassifier:
    """The committed classifier in eval mode (safetensors: no code execution)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no classifier weights at {path}; run scripts/train_classifier.py")
    net = MNISTClassifier()
    net.load_state_dict(load_file(str(path)))
    return net.eval()


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels (zero fill): [B, C, H, W] -> same."""
    b, _, h, w = images.shape
    padded = F.pad(images, [max_shift] * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


@torch.no_grad()
def accuracy(net: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy on uint8 images [N, 1, H, W]."""
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = net(images[i:i + batch_size].float() / 255)
        correct += (logits.argmax(1) == labels[i:i + batch_size]).sum().item()
    return correct / len(images)


def train_classifier(train_images: torch.Tensor, train_labels: torch.Tensor, epochs: int = 4,
                     batch_size: int = 128, lr: float = 2e-3, seed: int = 0) -> MNISTClassifier:
    """AdamW with a one-cycle cosine schedule and +-2 px shifts; uint8 images [N, 1, 32, 32]."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = MNISTClassifier()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * (len(train_images) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / steps, 1))))
    net.train()
    bar = tqdm(total=steps, desc="classifier")
    for _ in range(epochs):
        order = torch.randperm(len(train_images), generator=generator)
        for i in range(len(train_images) // batch_size):
            idx = order[i * batch_size:(i + 1) * batch_size]
            x = random_shift(train_images[idx].float() / 255, 2, generator)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(net(x).float(), train_labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return net.eval()


def save_classifier(net: MNISTClassifier, path: str | Path = WEIGHTS) -> None:
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
