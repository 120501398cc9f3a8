"""edgekit: one PyTorch model in; verified, quantized, benchmarked phone artifacts out."""

__version__ = "0.1.0"
