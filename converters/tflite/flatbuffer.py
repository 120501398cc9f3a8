"""Write a TFLite model object (the flatbuffer object API) back to bytes, compactly.

The object API's ``Pack`` writes every numeric vector anew. A per-channel int8 model repeats the
same vectors many times: each quantized weight and each int32 bias stores one int64 zero point per
output channel (all zeros), and a layer's weight and bias zero-point vectors are identical. FlatBuffers
lets several tables point at one vector, so :class:`SharedVectorBuilder` writes each distinct numeric
vector once and hands out its offset again; the LiteRT runtime reads the shared vectors like any other.
Constant buffers (``uint8`` data) are aligned to 16 bytes, as the LiteRT converter writes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BUFFER_ALIGNMENT = 16  # bytes; the alignment the LiteRT converter gives constant buffers


def _builder_class() -> type:
    import flatbuffers

    class SharedVectorBuilder(flatbuffers.Builder):
        """A ``flatbuffers.Builder`` whose ``CreateNumpyVector`` writes each distinct vector once."""

        def __init__(self, initial_size: int) -> None:
            super().__init__(initial_size)
            self._written: dict[tuple[str, bytes], int] = {}

        def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 (flatbuffers' name)
            x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<"))
            if x.ndim != 1:
                raise TypeError("multidimensional-ndarray passed to CreateNumpyVector")
            key = (x.dtype.str, x.tobytes())
            if key not in self._written:
                self._written[key] = self._write(x, key[1])
            return self._written[key]

        def _write(self, x: np.ndarray, payload: bytes) -> int:
            alignment = BUFFER_ALIGNMENT if x.dtype == np.uint8 and x.size >= BUFFER_ALIGNMENT else x.dtype.alignment
            self.StartVector(x.itemsize, x.size, alignment)
            self.head = self.head - len(payload)
            self.Bytes[self.head:self.head + len(payload)] = payload
            self.vectorNumElems = x.size
            return self.EndVector()

    return SharedVectorBuilder


def pack_model(model: Any, size_hint: int) -> bytes:
    """Serialize a ``schema.ModelT`` to ``.tflite`` bytes with identical numeric vectors shared."""
    builder = _builder_class()(size_hint + 65536)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
