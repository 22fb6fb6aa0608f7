"""Evaluation in a feature net's feature space (one per data set): FID, precision/recall, class coverage."""
from genkit.evaluation.classifier import (FeatureNet, FeatureNetInfo, feature_nets_for, load_feature_net,
                                          save_feature_net, train_feature_net)
from genkit.evaluation.evaluate import Evaluator
from genkit.evaluation.metrics import class_coverage, fid, frechet_distance, precision_recall

__all__ = ["Evaluator", "FeatureNet", "FeatureNetInfo", "class_coverage", "feature_nets_for", "fid",
           "frechet_distance", "load_feature_net", "precision_recall", "save_feature_net", "train_feature_net"]
