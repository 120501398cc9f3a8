"""Opening an ONNX Runtime session the way the artifact asks (the session config stored in its metadata)."""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.errors import EdgekitError, first_line, require

SESSION_CONFIG_KEY = "onnxruntime_session_config"  # metadata entry: session config an app should set


def open_session(path: Path, threads: int):
    """An ONNX Runtime CPU session on ``path`` with ``threads`` intra-op threads, quiet, and the session
    config entries the model's metadata asks for (``SESSION_CONFIG``)."""
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    try:
        for key, value in session_config(path).items():
            options.add_session_config_entry(key, value)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EdgekitError(f"ONNX Runtime cannot load {path}: {first_line(exc, 300)}") from None


def session_config(path: Path) -> dict[str, str]:
    """The session config entries stored in the model's metadata (none for most precisions)."""
    onnx = require("onnx", "onnx")
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props.get(SESSION_CONFIG_KEY, "{}"))
