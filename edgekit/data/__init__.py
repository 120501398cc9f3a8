"""Datasets: bundled real data and loaders for a user's own files. Importing registers them."""

from edgekit.data import bytes_corpus, digits, image_folder, motion, photos  # noqa: F401  (register the sources)
from edgekit.data.base import DATASETS, Dataset, Preprocessing, Split

__all__ = ["DATASETS", "Dataset", "Preprocessing", "Split", "load_dataset"]


def load_dataset(source: str, **options) -> Dataset:
    """Load a registered dataset source (``digits``, ``image_folder``, ...) with its options."""
    return DATASETS.get(source)(**options)
