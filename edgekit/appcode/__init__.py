"""App code generated from a bundle: typed Swift (Core ML) and Kotlin (LiteRT, ONNX Runtime Android) wrappers
per artifact, with an on-device golden parity self-test. ``edgekit app-code`` and the "app_code" bundle document."""

from __future__ import annotations

from pathlib import Path

from edgekit.appcode import kotlin, swift  # noqa: F401  (register the languages)
from edgekit.appcode.common import APP_FOLDER, LANGUAGES, write_app_code
from edgekit.artifact import Manifest, load_manifest

__all__ = ["APP_FOLDER", "LANGUAGES", "app_code", "app_code_document", "write_app_code"]


def app_code(bundle: str | Path, langs: list[str], out: str | Path | None = None) -> list[Path]:
    """Write app code for ``langs`` (``swift``, ``kotlin``) from ``bundle``'s manifest into ``out``
    (default: ``bundle/app``); returns the files written."""
    bundle = Path(bundle)
    return write_app_code(bundle, load_manifest(bundle), Path(out) if out else bundle / APP_FOLDER, langs)


def app_code_document(bundle: Path, manifest: Manifest) -> list[str]:
    """The bundle document: every language's code under ``bundle/app``, as paths relative to the bundle."""
    written = write_app_code(bundle, manifest, bundle / APP_FOLDER, list(LANGUAGES))
    return [str(p.relative_to(bundle)) for p in written]
