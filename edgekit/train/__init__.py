"""Training: one loop, augmentations, and the recipe → checkpoint step."""

from edgekit.train.loop import TrainResult, accuracy, train_classifier, train_model
from edgekit.train.run import train_recipe
from edgekit.train.tasks import TASKS, Task

__all__ = ["TASKS", "Task", "TrainResult", "accuracy", "train_classifier", "train_model", "train_recipe"]
