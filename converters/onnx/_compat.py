"""Uses of ONNX / ONNX Runtime private API: none. edgekit uses only public ``onnx``, ``onnxscript`` and
``onnxruntime`` calls (``torch.onnx.export(dynamo=True)``, ``onnx.helper``, ``onnxruntime.quantization``,
``LoraAdapter``/``AdapterFormat``).

The newest of those public names is listed in ``RELIED_ON`` (written against onnxruntime 1.32, onnx 1.23);
``tests/test_compat.py`` checks each still exists, so an older or changed wheel fails there by name.
"""

from __future__ import annotations

WRITTEN_AGAINST = {"onnxruntime": "1.32", "onnx": "1.23"}

# module → names it must offer (multi-LoRA packaging needs onnxruntime >= 1.20)
RELIED_ON = {
    "onnxruntime": ("LoraAdapter", "AdapterFormat", "RunOptions", "InferenceSession", "SessionOptions", "OrtValue"),
    "onnxruntime.quantization": ("quantize_dynamic", "QuantType"),
    "onnx.helper": ("make_sparse_tensor", "np_dtype_to_tensor_dtype", "make_node", "make_tensor_value_info"),
}
