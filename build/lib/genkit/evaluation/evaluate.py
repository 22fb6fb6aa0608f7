"""Score generated MNIST digits against the test split in the classifier's feature space."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from genkit.config import DataConfig
from genkit.registry import ArgumentError
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

    def __init__(self, data: DataConfig | None = None, classifier: MNISTClassifier | None = None,
                 batch_size: int = 500, progress: bool = True):
        self.data_cfg = data or DataConfig()
        self.classifier = classifier or load_classifier()
        self.batch_size, self.progress = batch_size, progress
        test = load_images(self.data_cfg, split="test", progress=progress)
        self.test_features, _ = self.embed(test.images.float() / 255)

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
        """The same metrics for n real training images (drawn with `seed`): the real-data floor."""
        train = load_images(self.data_cfg, split="train", progress=self.progress)
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
        return self.score(train.images[pick].float() / 255, train.labels[pick] if train.labels is not None else None,
                          seed=seed)
