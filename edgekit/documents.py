"""Documents written into a bundle from its manifest, beside the artifacts: each a registered writer.

A writer ``(bundle, manifest) -> [relative paths]`` writes its files atomically inside the bundle and returns
them; ``write_documents`` records them in ``manifest.documents[name]`` (so ``edgekit verify`` does not call them
stray) or, when a writer fails, the one-line error there: a document never fails the conversion."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgekit.appcode import app_code_document
from edgekit.artifact import Manifest
from edgekit.debuglog import log_traceback
from edgekit.errors import first_line
from edgekit.registry import Registry
from edgekit.report.model_card import write_model_card

DocumentWriter = Callable[[Path, Manifest], list[str]]
DOCUMENTS: Registry[DocumentWriter] = Registry("bundle document")
DOCUMENTS.register("model_card")(write_model_card)
DOCUMENTS.register("app_code")(app_code_document)


def write_documents(bundle: Path, manifest: Manifest) -> Manifest:
    """Run every registered writer on the finished bundle, record what each wrote, save the manifest."""
    for name in DOCUMENTS:
        try:
            manifest.documents[name] = {"files": sorted(DOCUMENTS.get(name)(bundle, manifest))}
        except Exception as exc:  # noqa: BLE001 - a document is advice about the artifacts; they stand
            log_traceback(exc, f"bundle document {name}")
            manifest.documents[name] = {"files": [], "error": f"{type(exc).__name__}: "
                                                              f"{first_line(exc, 300, '(no message)')}"}
    manifest.save(bundle)
    return manifest
