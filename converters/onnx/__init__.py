"""ONNX: export (torch.onnx, dynamo), weight quantization, multi-adapter packaging (``.onnx_adapter``), and the
ONNX Runtime runner. Importing the package registers the ``onnx`` converter."""

from edgekit.converters.onnx.export import OnnxConverter

__all__ = ["OnnxConverter"]
