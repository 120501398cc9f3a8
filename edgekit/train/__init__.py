"""Training: one loop, augmentations, and the recipe → checkpoint step."""

from edgekit.train.loop import TrainResult, accuracy, train_classifier
from edgekit.train.run import train_recipe

__all__ = ["TrainResult", "accuracy", "train_classifier", "train_recipe"]
