"""App code generated from a bundle: typed Swift (Core ML) and Kotlin (LiteRT, ONNX Runtime Android) wrappers
per artifact, with an on-device golden parity self-test. ``edgekit app-code`` and the "app_code" bundle document."""

from __future__ import annotations

from edgekit.appcode import kotlin, swift  # noqa: F401  (register the languages)
from edgekit.appcode.common import APP_FOLDER, LANGUAGES, generate_app_code
from edgekit.appcode.output import app_code, app_code_document

__all__ = ["APP_FOLDER", "LANGUAGES", "app_code", "app_code_document", "generate_app_code"]
