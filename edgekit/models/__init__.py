"""Model families. Importing this package registers every family."""

from edgekit.models import cnn, ssm, transformer  # noqa: F401  (registers "cnn", "ssm", "transformer")
from edgekit.models.base import FAMILIES, EdgeModel, ExportGraph, config_to_dict, create_model

__all__ = ["FAMILIES", "EdgeModel", "ExportGraph", "config_to_dict", "create_model"]
