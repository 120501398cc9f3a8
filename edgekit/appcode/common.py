"""What the generated app code needs from a bundle, language-neutral: one ``AppArtifact`` per verified
artifact (names, shapes, dtypes, int8 scale/zero-point, the per-output criteria it was verified with),
the golden files exported as raw little-endian arrays + a JSON index (never a pickle), the template type
and the registry of languages (``LANGUAGES``: name → generator of {relative path: text})."""

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
from edgekit.errors import EdgekitError
from edgekit.io import atomic_output, atomic_write_text
from edgekit.registry import Registry

APP_FOLDER = "app"  # inside the bundle: app/swift, app/kotlin, app/golden
GOLDEN_FOLDER = "golden"


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


def export_golden(bundle: Path, key: str, out: Path) -> list[Path]:
    """``golden[_<key>].npz`` of ``bundle`` as ``out/<key or 'golden'>.json`` (names, shapes, dtypes, files)
    plus one raw little-endian ``.bin`` per array (float32, int32 or int64); returns the paths
    written, none when the bundle has no such golden file."""
    source = bundle_path(bundle, golden_name(key), "golden file")
    if not source.is_file():
        return []
    stem = key or "golden"
    index: dict[str, Any] = {"source": source.name, "byte_order": "little", "arrays": {}}
    written = []
    with np.load(source, allow_pickle=False) as npz:
        for name in npz.files:
            array = npz[name]
            dtype = ("<i4" if array.dtype.itemsize <= 4 else "<i8") if array.dtype.kind in "iub" else "<f4"
            target = out / f"{stem}.{name}.bin"
            with atomic_output(target) as staged:
                staged.write_bytes(np.ascontiguousarray(array, dtype=dtype).tobytes())
            written.append(target)
            index["arrays"][name] = {"file": target.name, "shape": list(array.shape),
                                     "dtype": _DTYPES[dtype]}
    target = out / f"{stem}.json"
    atomic_write_text(target, json.dumps(index, indent=2))
    return [target, *written]


Generator = Callable[[Manifest, list[AppArtifact]], dict[str, str]]


@dataclass(frozen=True)
class Language:
    """A target language: which formats it wraps and the generator of its files (relative path → text)."""

    formats: tuple[str, ...]
    generate: Generator


LANGUAGES: Registry[Language] = Registry("app-code language")


def write_app_code(bundle: str | Path, manifest: Manifest, out: str | Path, langs: list[str]) -> list[Path]:
    """Write each language's wrappers and self-tests under ``out/<lang>/`` and the golden files they read under
    ``out/golden/``; returns every path written."""
    bundle, out = Path(bundle), Path(out)
    unknown = [lang for lang in langs if lang not in LANGUAGES]
    if unknown:
        raise EdgekitError(f"app-code language {unknown[0]!r} is not known; use one of {', '.join(LANGUAGES)}")
    written: list[Path] = []
    keys: set[str] = set()
    for lang in langs:
        language = LANGUAGES.get(lang)
        artifacts = app_artifacts(manifest, language.formats, bundle)
        for rel, text in language.generate(manifest, artifacts).items():
            atomic_write_text(out / lang / rel, text)
            written.append(out / lang / rel)
        keys |= {k for a in artifacts for k in a.golden.values()}
    for key in sorted(keys):
        written += export_golden(bundle, key, out / GOLDEN_FOLDER)
    return written


def language_literal(value: Any, list_open: str, list_close: str, null: str, dollar: str = "$") -> str:
    """A Swift or Kotlin literal: lists as ``list_open … list_close``, None as ``null``, strings JSON-escaped (non-ASCII
    kept) with ``$`` written as ``dollar`` (Kotlin's string templates need ``\\$``)."""
    if isinstance(value, (list, tuple)):
        return list_open + ", ".join(language_literal(v, list_open, list_close, null, dollar) for v in value) + list_close
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("$", dollar)
    if value is None:
        return null
    return swift_kotlin_literal(value)


def swift_kotlin_literal(value: Any) -> str:
    """A number, string, list or None as a literal both Swift and Kotlin read (lists as the caller wraps them)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "0.0"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # JSON string escapes are valid Swift/Kotlin escapes for printable text


def syntax_problem(code: str, line_comment: str = "//") -> str | None:
    """A tokenizer-level check (no Swift/Kotlin compiler here): brackets balanced outside string literals and
    comments, strings closed, no unreplaced ``%%`` template field. None when nothing is wrong."""
    if "%%" in code:
        return f"unreplaced template field near {code[code.index('%%'):][:30]!r}"
    pairs, stack, i, line = {")": "(", "]": "[", "}": "{"}, [], 0, 1
    while i < len(code):
        c = code[i]
        if c == "\n":
            line += 1
        if code.startswith(line_comment, i):
            i = code.find("\n", i)
            i = len(code) if i < 0 else i
            continue
        if code.startswith("/*", i):
            end = code.find("*/", i + 2)
            if end < 0:
                return f"line {line}: unclosed block comment"
            line += code.count("\n", i, end)
            i = end + 2
            continue
        if c == '"':
            j = i + 1
            while j < len(code) and code[j] != '"':
                if code[j] == "\n":
                    return f"line {line}: unclosed string literal"
                j += 2 if code[j] == "\\" else 1
            if j >= len(code):
                return f"line {line}: unclosed string literal"
            i = j + 1
            continue
        if c in "([{":
            stack.append((c, line))
        elif c in ")]}":
            if not stack or stack[-1][0] != pairs[c]:
                return f"line {line}: unbalanced {c!r}"
            stack.pop()
        i += 1
    return f"line {stack[-1][1]}: {stack[-1][0]!r} never closed" if stack else None
