"""Score generated MNIST digits against the test split in the classifier's feature space."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from genkit.config import DataConfig
from genkit.registry import ArgumentError, ConfigError
from genkit.data import load_images
from genkit.evaluation.classifier import MNISTClassifier, load_classifier
from genkit.evaluation.metrics import class_coverage, fid, precision_recall


class Evaluator:
    """FID, precision/recall and class coverage of images in [0, 1] against the test split.

    `data` names the data set and its geometry (the model's `cfg.data`); the test split's
    features are computed once. `floor(n)` scores n real training images the same way: the
    best a model can do with n samples.
    """

    min_images = 5  # precision/recall's k-NN radii (k = 3) need k + 1 other points, FID a covariance
    min_agreement = 0.9  # of the classifier with the test split's labels (MNIST: 0.99), else its confidence

    def __init__(self, data: DataConfig | None = None, classifier: MNISTClassifier | None = None,
                 batch_size: int = 500, progress: bool = True):
        self.data_cfg = data or DataConfig()
        self.classifier = classifier or load_classifier()
        self.batch_size, self.progress = batch_size, progress
        if self.data_cfg.channels != 1:
            raise ConfigError(f"data.channels: genkit's metrics live in the feature space of an MNIST classifier "
                              f"and score 1-channel digits, not {self.data_cfg.channels}-channel images; write "
                              f"samples with `sample --outdir` or `--npz` and score them with clean-fid or "
                              f"torch-fidelity")
        test = load_images(self.data_cfg, split="test", progress=progress)
        self.test_features, probs = self.embed(test.images.float() / 255)
        self._check_digits(probs, test.labels)

    def _check_digits(self, probs: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Refuse a test split the classifier does not read as MNIST digits: its features would
        measure nothing (random RGB noise once scored FID 0.74 against itself)."""
        if labels is not None:
            agreement, what = float((probs.argmax(1) == labels).double().mean()), "agrees with"
        else:
            agreement, what = float(probs.max(1).values.double().mean()), "is confident on"
        if agreement < self.min_agreement:
            raise ConfigError(f"data.path: {self.data_cfg.path} does not look like MNIST digits to genkit's "
                              f"classifier (it {what} {agreement:.0%} of the test split, below "
                              f"{self.min_agreement:.0%}); its MNIST-feature metrics would measure nothing")

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [N, 128] and class probabilities [N, 10] of images [N, C, H, W] in [0, 1]."""
        feats, probs = [], []
        batches = range(0, len(images), self.batch_size)
        for i in tqdm(batches, desc="features", disable=not self.progress or len(batches) < 4, leave=False):
            f = self.classifier.embed(images[i:i + self.batch_size].float())
            feats.append(f)
            probs.append(self.classifier.head(torch.relu(f)).softmax(1))
        return torch.cat(feats), torch.cat(probs)

    def score(self, images: torch.Tensor, labels: torch.Tensor | None = None, seed: int = 0) -> dict[str, float]:
        """Metrics of images [N, C, H, W] in [0, 1]; `label_accuracy` too when the requested class
        labels [N] are given (how often the classifier agrees with the label asked for)."""
        if len(images) < self.min_images:
            raise ArgumentError("images", f"scoring needs at least {self.min_images} images, got {len(images)}")
        feats, probs = self.embed(images)
        # precision/recall compare equal-sized sets (k-NN radii depend on the set size)
        subset = torch.randperm(len(self.test_features), generator=torch.Generator().manual_seed(seed))[:len(feats)]
        precision, recall = precision_recall(self.test_features[subset], feats)
        out = {"fid": fid(feats, self.test_features), "precision": precision, "recall": recall,
               **class_coverage(probs)}
        if labels is not None:
            out["label_accuracy"] = float((probs.argmax(1) == labels.to(probs.device)).double().mean())
        return out

    def floor(self, n: int, seed: int = 0) -> dict[str, float]:
        """The same metrics for n real training images (drawn with `seed`): the real-data floor.
        A split with fewer than n images gives the floor of all it holds; `images` says how many."""
        train = load_images(self.data_cfg, split="train", progress=self.progress)
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
        scores = self.score(train.images[pick].float() / 255, train.labels[pick] if train.labels is not None else None,
                            seed=seed)
        return {**scores, "images": len(pick)}
