"""Small text classifiers trained in-process, optionally with DP-SGD (opacus).

The probe engine checks models that come out of training; these are the models
the benchmarks and tests train themselves, and DP-SGD is the training-side
defence that bounds how much any few examples can move the model.
"""

from trainguard.train.classifier import TextClassifier
from trainguard.train.dp import DPConfig
from trainguard.train.fit import DP_PRESETS, DPPreset, EpochStats, TrainResult, train_classifier
from trainguard.train.models import MODELS, LinearBoW, TextCNN, build_model
from trainguard.train.vocab import PAD, UNK, Vocab, tokenize

__all__ = [
    "DP_PRESETS", "DPConfig", "DPPreset", "EpochStats", "LinearBoW", "MODELS", "PAD", "TextCNN", "TextClassifier", "TrainResult", "UNK",
    "Vocab", "build_model", "tokenize", "train_classifier",
]
