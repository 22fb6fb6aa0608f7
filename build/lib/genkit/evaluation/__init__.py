"""Evaluation in an MNIST classifier's feature space: FID, precision/recall, class coverage."""
from genkit.evaluation.classifier import MNISTClassifier, load_classifier
from genkit.evaluation.evaluate import Evaluator
from genkit.evaluation.metrics import class_coverage, fid, frechet_distance, precision_recall

__all__ = ["Evaluator", "MNISTClassifier", "class_coverage", "fid", "frechet_distance", "load_classifier",
           "precision_recall"]
