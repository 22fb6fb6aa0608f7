"""Score generated images against a data set's test split in the feature space of a feature net
that reads that data set (`genkit.evaluation.classifier`)."""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from genkit.config import DataConfig
from genkit.data import ImageData, load_images, resolve_data_path
from genkit.evaluation.classifier import INFO_FILE, FeatureNetInfo, feature_nets_for, load_feature_net
from genkit.evaluation.metrics import class_coverage, fid, precision_recall
from genkit.registry import ArgumentError, ConfigError


class Evaluator:
    """FID, precision/recall and class coverage of images in [0, 1] against the test split.

    `data` names the data set and its geometry (the model's `cfg.data`); the test split's
    features are computed once. `feature_net`: a feature net's directory, or None for the first of
    the data set's own, then genkit's bundled nets (`feature_nets_for`) that reads its test split
    (below); data that none reads are refused, naming `genkit train-classifier`. `floor(n)` scores n
    real training images the same way: the best a model can do with n samples.

    A net reads a split when it agrees with the split's labels (without labels: is as confident on
    it) at least `min_agreement` times as often as on its own test split: a net for digits does not
    read garments, and its features would measure nothing (random RGB noise once scored FID 0.74
    against itself in digit features).
    """

    min_images = 5  # precision/recall's k-NN radii (k = 3) need k + 1 other points, FID a covariance
    min_agreement = 0.9  # of the net's agreement (or confidence) on its own test split

    def __init__(self, data: DataConfig | None = None, feature_net: str | Path | None = None,
                 batch_size: int = 500, progress: bool = True):
        self.data_cfg = data or DataConfig()
        self.batch_size, self.progress = batch_size, progress
        if feature_net is not None and not (Path(feature_net) / INFO_FILE).is_file():
            raise ArgumentError("feature_net", f"{feature_net} holds no feature net ({INFO_FILE}); train one with "
                                               f"`genkit train-classifier`")
        test = load_images(self.data_cfg, split="test", progress=progress)
        tried = []
        for directory in [Path(feature_net)] if feature_net is not None else \
                feature_nets_for(resolve_data_path(self.data_cfg.path)):
            self.classifier, self.info = load_feature_net(directory)
            self.test_features, probs = self.embed(test.images.float() / 255)
            reads, why = self._reads(probs, test)
            if reads:
                self.feature_net = directory
                return
            tried.append(f"{directory.name}: {why}")
        hint = f"; tried {'; '.join(tried)}" if tried else ""
        raise ConfigError(f"data.path: no feature net reads {self.data_cfg.path}, so genkit's metrics would measure "
                          f"nothing{hint}; train one for it with `genkit train-classifier` (it needs labels)")

    def _reads(self, probs: torch.Tensor, test: ImageData) -> tuple[bool, str]:
        """Whether the net just loaded reads `test` (see the class), and what it measured."""
        info: FeatureNetInfo = self.info
        if test.labels is not None and int(test.labels.max()) < info.num_classes:
            seen, own, what = float((probs.argmax(1) == test.labels).double().mean()), info.test_accuracy, "agrees with"
        else:
            seen, own, what = float(probs.max(1).values.double().mean()), info.test_confidence, "is confident on"
        need = self.min_agreement * own
        return seen >= need, f"it {what} {seen:.0%} of the test split, below {need:.0%}"

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [N, 128] and class probabilities [N, classes] of images [N, C, H, W] in [0, 1]."""
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
