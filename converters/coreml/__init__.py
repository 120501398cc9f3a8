"""Core ML: export (coremltools), weight compression, stateful step graphs, multifunction adapter packaging,
the macOS runner and the MIL reference evaluator that verifies artifacts elsewhere. Importing the package
registers the ``coreml`` converter."""

from edgekit.converters.coreml.export import CoreMLConverter

__all__ = ["CoreMLConverter"]
