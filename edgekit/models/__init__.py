"""Model families. Importing this package registers every family."""

from edgekit.models import cnn  # noqa: F401  (registers "cnn")
from edgekit.models.base import FAMILIES, EdgeModel, config_to_dict, create_model

__all__ = ["FAMILIES", "EdgeModel", "config_to_dict", "create_model"]
