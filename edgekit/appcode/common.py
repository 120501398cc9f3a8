"""What the generated app code needs from a bundle, language-neutral: one ``AppArtifact`` per verified
artifact (names, shapes, dtypes, int8 scale/zero-point, the per-output criteria it was verified with),
the golden files exported as raw little-endian arrays + a JSON index (never a pickle; the first rows only,
``APP_GOLDEN_BYTES``), the template type and the registry of languages (``LANGUAGES``: name → generator of
{relative path: text})."""

from __future__ import annotations

import json
import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.artifact import BASE, VERIFIED, Manifest, bundle_path, golden_graph, golden_name
from edgekit.converters.onnx.session import session_config
from edgekit.registry import Registry

APP_FOLDER = "app"  # inside the bundle: app/swift, app/kotlin, app/golden
GOLDEN_FOLDER = "golden"
# What the app's golden copy of one golden file may hold: its first rows up to this many bytes (at least one
# row; all of them when they fit). `edgekit verify` checks every row; the app's self-test is the on-device
# smoke parity, and an LM's golden file (ssm_lm: 16 sequences × 256 positions × 256 logits) is megabytes.
APP_GOLDEN_BYTES = 256 * 1024


class Code(string.Template):
    """A code template: ``%%{field}`` (``$`` belongs to Swift and Kotlin string interpolation)."""

    delimiter = "%%"


def fill(template: str, **fields: Any) -> str:
    """``template`` with every ``%%{field}`` replaced; a missing field is a bug, so it raises."""
    return Code(template).substitute({k: str(v) for k, v in fields.items()})


@dataclass
class Tensor:
    """One input or output of an artifact as the app sees it."""

    name: str
    shape: list[int]
    dtype: str
    scale: float | None = None  # int8/uint8 I/O: real = (q - zero_point) * scale
    zero_point: int | None = None

    @property
    def count(self) -> int:
        return math.prod(max(int(d), 1) for d in self.shape)


@dataclass
class Criteria:
    """What one output must meet against golden (from the artifact's recorded verification ``allowed``)."""

    max_abs_diff: float | None
    min_snr_db: float | None
    min_top1_agreement: float | None


@dataclass
class AppArtifact:
    """One verified artifact of the bundle, as the generated wrapper and self-test use it."""

    class_name: str
    format: str
    precision: str
    file: str
    graph: str
    inputs: list[Tensor]
    outputs: list[Tensor]
    criteria: list[Criteria]
    golden: dict[str, str]  # variant name (BASE for a plain artifact) → golden key (app/golden/<key>.json)
    variants: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    usage: str = ""
    session_config: dict[str, str] = field(default_factory=dict)  # ONNX: entries an app must set on its session
    golden_rows: dict[str, tuple[int, int]] = field(default_factory=dict)  # golden key → (rows kept, rows in bundle)

    def rows_note(self, variant: str) -> str:
        """``"the first 1 of 16 golden rows"`` for the golden copy ``variant`` reads (all rows when unknown)."""
        kept, total = self.golden_rows.get(self.golden.get(variant, ""), (0, 0))
        if not total:
            return "the golden rows"
        return f"all {total} golden rows" if kept == total else f"the first {kept} of {total} golden rows"


def identifier(*parts: str) -> str:
    """``("cnn_digits", "int8", "tflite")`` → ``CnnDigitsInt8Tflite`` (a type name valid in Swift and Kotlin)."""
    words = [w for p in parts for w in re.split(r"[^0-9A-Za-z]+", p) if w]
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Model"
    return name if name[0].isalpha() else f"M{name}"


def _tensor(raw: dict[str, Any]) -> Tensor:
    q = raw.get("quantization") or {}
    return Tensor(str(raw["name"]), [int(d) for d in raw.get("shape") or []], str(raw.get("dtype")),
                  q.get("scale"), q.get("zero_point"))


def _criteria(verification: dict[str, Any], n: int) -> list[Criteria]:
    recorded = verification.get("outputs") or []
    found = []
    for i in range(n):
        allowed = recorded[i].get("allowed", {}) if i < len(recorded) else {}
        found.append(Criteria(allowed.get("max_abs_diff"), allowed.get("min_snr_db"), allowed.get("min_top1_agreement")))
    return found


def app_artifacts(manifest: Manifest, formats: tuple[str, ...], bundle: Path | None = None) -> list[AppArtifact]:
    """The verified, kept artifacts of ``formats`` (not NPU-compiled ones), in manifest order; with ``bundle``,
    ONNX artifacts carry the session config stored in their metadata."""
    found = []
    for e in manifest.artifacts:
        if e.format not in formats or e.status != VERIFIED or not e.file or e.compiled_for:
            continue
        names = [v["name"] for v in e.variants] or [BASE]
        outputs = [_tensor(t) for t in e.outputs]
        found.append(AppArtifact(
            identifier(manifest.name, e.graph, e.precision, e.format), e.format, e.precision, e.file, e.graph,
            [_tensor(t) for t in e.inputs], outputs, _criteria(e.verification, len(outputs)),
            {n: golden_graph(n, e.graph) for n in names}, e.variants, e.states, e.usage,
            session_config(bundle_path(bundle, e.file)) if bundle and e.format == "onnx" else {}))
    return found


_DTYPES = {"<i4": "int32", "<i8": "int64", "<f4": "float32"}


def source_rows(arrays: dict[str, np.ndarray]) -> int:
    """Rows of a golden file: its arrays' shared leading axis."""
    return min((a.shape[0] for a in arrays.values() if a.ndim), default=0)


def kept_rows(arrays: dict[str, np.ndarray], budget: int = APP_GOLDEN_BYTES) -> int:
    """How many leading rows (axis 0, shared by every golden array) fit in ``budget`` bytes: at least one,
    all of them when they fit."""
    total = source_rows(arrays)
    if not total:
        return 0
    per_row = sum(a[:1].size * (4 if a.dtype.itemsize <= 4 or a.dtype.kind == "f" else 8)
                  for a in arrays.values() if a.ndim)
    return max(1, min(total, budget // max(per_row, 1)))


def export_golden(bundle: Path, key: str, out: Path) -> tuple[list[Path], tuple[int, int]]:
    """``golden[_<key>].npz`` of ``bundle`` as ``out/<key or 'golden'>.json`` (names, shapes, dtypes, files,
    rows kept of rows in the bundle) plus one raw little-endian ``.bin`` per array (float32, int32 or int64),
    cut to ``kept_rows``; returns the paths written and (rows kept, rows in the bundle), nothing when the
    bundle has no such golden file."""
    source = bundle_path(bundle, golden_name(key), "golden file")
    if not source.is_file():
        return [], (0, 0)
    with np.load(source, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    stem, rows, total = key or "golden", kept_rows(arrays), source_rows(arrays)
    index: dict[str, Any] = {"source": source.name, "byte_order": "little", "rows": rows, "source_rows": total,
                             "arrays": {}}
    written = []
    for name, array in arrays.items():
        dtype = ("<i4" if array.dtype.itemsize <= 4 else "<i8") if array.dtype.kind in "iub" else "<f4"
        part = array[:rows] if array.ndim else array
        target = out / f"{stem}.{name}.bin"
        target.write_bytes(np.ascontiguousarray(part, dtype=dtype).tobytes())
        written.append(target)
        index["arrays"][name] = {"file": target.name, "shape": list(part.shape), "dtype": _DTYPES[dtype]}
    target = out / f"{stem}.json"
    target.write_text(json.dumps(index, indent=2))
    return [target, *written], (rows, total)


Generator = Callable[[Manifest, list[AppArtifact]], dict[str, str]]


@dataclass(frozen=True)
class Language:
    """A target language: which formats it wraps and the generator of its files (relative path → text)."""

    formats: tuple[str, ...]
    generate: Generator


LANGUAGES: Registry[Language] = Registry("app-code language")


def generate_app_code(bundle: str | Path, manifest: Manifest, out: str | Path, langs: list[str]) -> list[Path]:
    """Write each language's wrappers and self-tests under ``out/<lang>/`` and the golden files they read under
    ``out/golden/``, into ``out``, a new folder (``edgekit.appcode.output`` stages it and moves it in whole);
    returns every path written."""
    bundle, out = Path(bundle), Path(out)
    chosen = {lang: found for lang in langs if (found := app_artifacts(manifest, LANGUAGES.get(lang).formats, bundle))}
    if not chosen:  # no verified artifact any of these languages can load: no app code, not an empty folder
        return []
    (out / GOLDEN_FOLDER).mkdir(parents=True)
    written: list[Path] = []
    rows: dict[str, tuple[int, int]] = {}
    for key in sorted({k for artifacts in chosen.values() for a in artifacts for k in a.golden.values()}):
        files, rows[key] = export_golden(bundle, key, out / GOLDEN_FOLDER)
        written += files
    for lang, artifacts in chosen.items():
        for a in artifacts:
            a.golden_rows = {k: rows[k] for k in a.golden.values() if k in rows}
        for rel, text in LANGUAGES.get(lang).generate(manifest, artifacts).items():
            (out / lang / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / lang / rel).write_text(text)
            written.append(out / lang / rel)
    return written


_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")  # what can end a line comment (and other controls)


def comment_text(value: Any) -> str:
    """``value`` (a manifest string) safe inside a ``//`` or ``/** */`` comment of generated code: line breaks and
    control characters become spaces and ``*/`` cannot close a block comment, so a crafted name stays text."""
    return _BREAKS.sub(" ", str(value)).replace("*/", "* /")


def language_literal(value: Any, list_open: str, list_close: str, null: str, dollar: str = "$",
                     unicode_escape: str = "\\u{{{:x}}}") -> str:
    """A Swift or Kotlin literal: lists as ``list_open … list_close``, None as ``null``, strings by ``string_literal``
    (``$`` written as ``dollar``: Kotlin's string templates need ``\\$``)."""
    if isinstance(value, (list, tuple)):
        return list_open + ", ".join(language_literal(v, list_open, list_close, null, dollar, unicode_escape)
                                     for v in value) + list_close
    if value is None:
        return null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "0.0"
    if isinstance(value, int):
        return str(value)
    return string_literal(str(value), dollar, unicode_escape)


_ESCAPED = re.compile(r'[\\"$\x00-\x1f\x7f\x85\u2028\u2029]')
_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def string_literal(text: str, dollar: str, unicode_escape: str) -> str:
    """``text`` as a double-quoted Swift or Kotlin string: quote, backslash, ``$`` (as ``dollar``), line breaks and
    every other control or line-separator character escaped, ``unicode_escape`` formatting a code point (Swift
    ``\\u{1f}``, Kotlin ``\\u001f``; JSON's ``\\b``, ``\\f``, ``\\u001f`` are not all valid in both); the rest kept."""
    def escape(match: re.Match[str]) -> str:
        char = match.group()
        return dollar if char == "$" else _SHORT_ESCAPES.get(char) or unicode_escape.format(ord(char))
    return '"' + _ESCAPED.sub(escape, text) + '"'

