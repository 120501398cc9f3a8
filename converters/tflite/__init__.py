"""TFLite/LiteRT: export (litert-torch), weight quantization (ai-edge-quantizer), multi-signature adapter
packaging, the LiteRT interpreter runner and ahead-of-time NPU compilation. Importing the package registers
the ``tflite`` converter."""

from edgekit.converters.tflite.export import TFLiteConverter

__all__ = ["TFLiteConverter"]
