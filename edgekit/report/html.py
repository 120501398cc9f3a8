"""One self-contained HTML page for a run (``report.json``) or a bundle (``manifest.json``): the artifact table,
size vs latency coloured by accuracy, per-layer SQNR, sequence-length scaling, adapter variants, placement, and
the commands and tool versions. Inline SVG only (``edgekit.report.plots``): no script, no network.

A manifest and a report are untrusted: every string taken from them is escaped (``html.escape``), and a value
of the wrong type is shown as unknown rather than trusted."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Callable, Sequence

from edgekit.artifact import MANIFEST, load_manifest, manifest_problem
from edgekit.errors import EdgekitError
from edgekit.io import atomic_write_text, check_output_dir
from edgekit.outdir import HTML_REPORT, OWNERS
from edgekit.report import plots
from edgekit.report.plots import esc
from edgekit.report.rows import build_rows

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
NOT_BENCHMARKED = "not benchmarked"
_PREFILL = re.compile(r"^prefill_L(\d+)$")


def _num(value: Any) -> float | None:
    """A finite number from untrusted data, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
        return None
    return float(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def load_report(path: str | Path) -> dict[str, Any]:
    """The report behind ``path``: a run folder or its report.json (kind "run"), or a bundle folder or its
    manifest.json (kind "bundle": rows from the manifest, no latency)."""
    path = Path(path)
    report_file = path / REPORT_JSON if path.is_dir() else path
    if report_file.name == REPORT_JSON and report_file.is_file():
        try:
            report = json.loads(report_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EdgekitError(f"{report_file} is not readable JSON ({exc}); expected edgekit run's report.json")
        if not isinstance(report, dict) or not isinstance(report.get("rows"), list):
            raise EdgekitError(f"{report_file} has no 'rows' list; expected the report.json that `edgekit run` writes")
        if report.get("manifest") is not None and (problem := manifest_problem(report["manifest"])):
            raise EdgekitError(f"{report_file}: its manifest is damaged: {problem}")
        return {**report, "kind": "run", "path": str(report_file.parent)}
    if (path.is_dir() and (path / MANIFEST).is_file()) or (path.is_file() and path.name == MANIFEST):
        manifest = load_manifest(path)
        bundle = path if path.is_dir() else path.parent
        return {"kind": "bundle", "path": str(bundle), "bundle": str(bundle), "rows": build_rows(manifest, []),
                "manifest": manifest.to_dict()}
    raise EdgekitError(f"{path} is neither a run folder (with {REPORT_JSON}) nor a bundle (with {MANIFEST}); "
                       f"give the folder `edgekit run` or `edgekit convert` wrote")


GENERATOR = '<meta name="generator" content="edgekit report">'  # how edgekit knows a page is its own


@OWNERS.register(HTML_REPORT)
def is_html_report(path: Path) -> bool:
    """Whether ``path`` is a page ``edgekit report`` wrote (its generator tag in the first bytes)."""
    try:
        with open(path, "rb") as f:
            return GENERATOR.encode() in f.read(512)
    except OSError:
        return False


def write_html_report(source: str | Path, out: str | Path | None = None,
                      command: Sequence[str] | None = None, overwrite: bool = False) -> Path:
    """Render ``source`` (run folder, bundle, report.json or manifest.json) to ``out``, atomically; ``command``
    is the command line recorded on the page. Returns the path written. By default a run's page is report.html
    beside report.json; a bundle's is ``<bundle>_report.html`` beside the bundle folder, never inside it (the
    manifest does not name it, so `edgekit verify` would call it stray). A file at the target that is not an edgekit
    page is kept unless ``overwrite``."""
    report = load_report(source)
    folder = Path(report["path"])
    default = folder / REPORT_HTML if report["kind"] == "run" else folder.parent / f"{folder.resolve().name}_report.html"
    target = Path(out) if out is not None else default
    check_output_dir(target, HTML_REPORT, overwrite, "--html")
    atomic_write_text(target, render_html(report, command))
    return target


def render_html(report: dict[str, Any], command: Sequence[str] | None = None) -> str:
    """The whole page for a loaded report (``load_report``)."""
    manifest = _dict(report.get("manifest"))
    name = manifest.get("name") or _dict(report.get("recipe")).get("name") or "edgekit report"
    body = []
    for anchor, title, section in SECTIONS:
        html = section(report, command)
        if html is not None:
            body.append(f'<section id="{anchor}"><h2>{esc(title)}</h2>{html}</section>')
    nav = " · ".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, s in SECTIONS if f'id="{a}"' in "".join(body))
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">{GENERATOR}"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            f"img-src data:\"><title>{esc(name)} · edgekit report</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(name)}</h1><p class=\"sub\">{_summary(report)}</p><nav>{nav}</nav></header>"
            + "".join(body) + "</body></html>\n")


def _summary(report: dict[str, Any]) -> str:
    manifest = _dict(report.get("manifest"))
    rows = [r for r in _list(report.get("rows")) if isinstance(r, dict) and r.get("format") != "pytorch"]
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("verified", "exported", "failed")}
    what = "run" if report["kind"] == "run" else "bundle (manifest only: not benchmarked)"
    parts = [f"{what} · {esc(report.get('path', ''))}", f"{len(rows)} artifact rows: "
             + ", ".join(f'<span class="st-{s}">{n} {s}</span>' for s, n in counts.items())]
    if report.get("reference"):
        parts.append(f"verified on {esc(report['reference'])}")
    if manifest.get("created"):
        parts.append(f"created {esc(manifest['created'])}")
    return " · ".join(parts)


def _size(n: Any) -> str:
    n = _num(n)
    if n is None:
        return "—"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    v = _num(value)
    return "—" if v is None else f"{v:{spec}}{suffix}"


def _table(head: Sequence[str], rows: list[list[str]], cls: str = "") -> str:
    """A table from already-escaped cells."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="wrap"><table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>'


def _artifacts(report: dict[str, Any], command: Sequence[str] | None) -> str:
    rows = [r for r in _list(report.get("rows")) if isinstance(r, dict)]
    if not rows:
        return "<p>No artifacts in this report.</p>"
    unbenched = NOT_BENCHMARKED if report["kind"] == "bundle" else "—"
    out = []
    for r in rows:
        status = str(r.get("status", ""))
        latency = unbenched if _num(r.get("median_ms")) is None else f"{_num(r['median_ms']):.3f}"
        out.append([f'<span class="st-{esc(status)}">{esc(status)}</span>', f"<code>{esc(r.get('artifact', ''))}</code>",
                    esc(r.get("format", "")), esc(r.get("precision", "")), esc(r.get("graph", "") or "—"),
                    esc(r.get("runtime", "")) + ("" if r.get("target") in (None, "host") else f" @ {esc(r['target'])}"),
                    _size(r.get("size_bytes")), _fmt(r.get("accuracy"), ".2%"), _fmt(r.get("max_abs_diff"), ".1e"),
                    _fmt(r.get("top1_agreement"), ".1%"), esc(latency), _fmt(r.get("p90_ms"), ".3f"),
                    _fmt(r.get("runs"), ".0f"), _fmt(r.get("speedup_vs_pytorch"), ".2f", "×"),
                    esc(r.get("placement") or "—"), esc(r.get("note") or "")])
    head = ("status", "artifact", "format", "precision", "graph", "runtime", "size", "accuracy", "max |Δ|",
            "top-1 agree", "median ms", "p90 ms", "runs", "× PyTorch", "placement", "note")
    return _table(head, out, "artifacts")


def _size_latency(report: dict[str, Any], command: Sequence[str] | None) -> str:
    rows = [r for r in _list(report.get("rows")) if isinstance(r, dict) and r.get("format") != "pytorch"]
    graphs = list(dict.fromkeys(str(r.get("graph") or "") for r in rows))
    graph = "step" if "step" in graphs else (graphs[0] if graphs else "")
    points: dict[tuple[str, str], plots.Point] = {}
    for r in rows:
        size, ms = _num(r.get("size_bytes")), _num(r.get("median_ms"))
        key = (str(r.get("format", "")), str(r.get("precision", "")))
        if str(r.get("graph") or "") == graph and size is not None and ms is not None and key not in points:
            points[key] = plots.Point(size / 1e6, ms, _num(r.get("accuracy")), " ".join(key))
    if not points:
        why = ("not benchmarked: a bundle records sizes, not latency (`edgekit run` or `edgekit bench` measures it)"
               if report["kind"] == "bundle" else "no artifact has both a size and a measured latency")
        return f'<p class="empty">{esc(why)}</p>'
    note = f" (graph <code>{esc(graph)}</code>)" if len(graphs) > 1 and graph else ""
    svg = plots.scatter(list(points.values()), "size (MB)", "median latency (ms)", "accuracy")
    return (f"<p>One point per format × precision{note}; colour is accuracy on the verification set "
            f"(grey: not measured).</p><figure>{svg}</figure>")


def _sqnr(report: dict[str, Any], command: Sequence[str] | None) -> str:
    groups: dict[str, tuple[list[str], list[dict]]] = {}
    unrecorded = []
    for a in _list(_dict(report.get("manifest")).get("artifacts")):
        layers = [x for x in _list(_dict(_dict(a.get("verification")).get("quantization")).get("layer_sqnr_db"))
                  if isinstance(x, dict)]
        if layers:
            key = json.dumps(layers, sort_keys=True, default=str)
            groups.setdefault(key, ([], layers))[0].append(str(a.get("file") or a.get("format")))
        elif a.get("precision") not in (None, "fp32"):
            unrecorded.append(str(a.get("file") or a.get("format")))
    if not groups:
        text = ("no per-layer SQNR recorded for " + ", ".join(unrecorded)) if unrecorded else \
            "no quantized artifact: every artifact is float, so there is no quantization error to attribute"
        return f'<p class="empty">{esc(text)}</p>'
    out = ["<p>Signal-to-quantization-noise ratio of each layer's output against the float model "
           "(higher is better; under ~20 dB a layer is a likely cause of accuracy loss; "
           "\"exact\": no error, \"float\": kept in float).</p>"]
    for files, layers in groups.values():
        items = [(f"{x.get('layer', '?')} ({x.get('op', '?')})",
                  _num(x.get("sqnr_db")) if x.get("quantized", True) else None) for x in layers]
        none_texts = {"exact" if x.get("quantized", True) else "float" for x in layers if _num(x.get("sqnr_db")) is None}
        out.append(f"<h3>{esc(', '.join(files))}</h3><figure>"
                   f"{plots.hbars(items, 'SQNR (dB)', '/'.join(sorted(none_texts)) or 'exact')}</figure>")
    return "".join(out)


def _sequence(report: dict[str, Any], command: Sequence[str] | None) -> str | None:
    rows = [r for r in _list(report.get("rows")) if isinstance(r, dict)]
    sweep = _dict(report.get("sequence_sweep"))
    prefill = [(int(m.group(1)), r) for r in rows if (m := _PREFILL.match(str(r.get("graph") or "")))]
    has_step = any(str(r.get("graph") or "").startswith("step") for r in rows)
    if not prefill and not has_step and not sweep:
        return None
    out = []
    if _list(sweep.get("prefill")):
        out.append(_sweep_plot(sweep, "prefill", "length", "Prefill latency vs sequence length",
                               "sequence length L (tokens; log scale)"))
    else:
        out.append(_bundle_prefill(prefill))
    if _list(sweep.get("step")):
        out.append(_sweep_plot(sweep, "step", "context", "Step latency vs context position",
                               "context position p (tokens before the step; log scale)", sweep.get("step_note")))
    else:
        out.append('<p class="empty">Step latency vs context: not measured (set <code>[bench] contexts = [0, 64, '
                   "256]</code> in the recipe and <code>edgekit run</code> measures the step graph there).</p>")
    if sweep:
        out.append(f'<p class="detail">Sweep: {_fmt(sweep.get("threads"), ".0f")} threads, up to '
                   f'{_fmt(sweep.get("runs"), ".0f")} timed runs per point (at most {_fmt(sweep.get("budget_s"), "g")}'
                   f' s of them, at least 5), {_fmt(sweep.get("seconds"), ".1f")} s in all; fp32 artifacts from the '
                   "bundle where it has them, others exported for the sweep; every point checked against PyTorch "
                   "(max |Δ| in the tooltips of the tables' values).</p>")
    return "".join(out)


def _bundle_prefill(prefill: list[tuple[int, dict[str, Any]]]) -> str:
    """Prefill latency from a bundle's own prefill graphs (a checkpoint exported at several lengths)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for length, r in prefill:
        if (ms := _num(r.get("median_ms"))) is not None:
            series.setdefault(f"{r.get('format', '')} {r.get('precision', '')}", []).append((length, ms))
    lengths = sorted({n for n, _ in prefill})
    if len(lengths) > 1 and any(len(s) > 1 for s in series.values()):
        return (f"<h3>Prefill latency vs sequence length</h3><figure>"
                f"{plots.lines(series, 'sequence length (tokens)', 'median latency (ms)', log_x=True)}</figure>")
    why = NOT_BENCHMARKED if not series else f"one prefill length ({', '.join(map(str, lengths))})"
    return (f'<p class="empty">Prefill latency vs sequence length: {esc(why)}; a curve needs several lengths measured '
            "(<code>[bench] seq_lengths = [64, 128, 256]</code> in the recipe, or a checkpoint exported at several "
            "lengths).</p>")


def _sweep_plot(sweep: dict[str, Any], kind: str, key: str, title: str, x_label: str, note: Any = None) -> str:
    """One sweep curve per format (points with a measured median), and a table of every point with its status
    (``note``: what the curve should look like, beside it)."""
    points = [p for p in _list(sweep.get(kind)) if isinstance(p, dict) and _num(p.get(key)) is not None]
    series: dict[str, list[tuple[float, float]]] = {}
    cells: dict[str, dict[float, str]] = {}
    missing: dict[str, set[str]] = {}
    for p in points:
        name = " ".join(str(x) for x in (p.get("format", ""), p.get("precision") or "eager") if x)
        x, ms = _num(p[key]), _num(p.get("median_ms"))
        if ms is not None and ms > 0:
            series.setdefault(name, []).append((x, ms))
            tip = (f"p90 {_fmt(p.get('p90_ms'), '.3g')} ms, min {_fmt(p.get('min_ms'), '.3g')} ms, "
                   f"{_fmt(p.get('runs'), '.0f')} runs") + (
                f", max |Δ| {_fmt(p.get('max_abs_diff'), '.1e')}" if p.get("max_abs_diff") is not None else "") + (
                f"; {p.get('source')}" if p.get("source") else "")
            cells.setdefault(name, {})[x] = f'<span title="{esc(tip)}">{ms:.3g}</span>'
        else:
            cells.setdefault(name, {})[x] = f'<span class="detail">{esc(p.get("status") or "not measured")}</span>'
            missing.setdefault(name, set()).add(str(p.get("status") or "not measured"))
    unmeasured = {name: statuses for name, statuses in missing.items() if name not in series}
    xs = sorted({x for name, row in cells.items() if name not in unmeasured for x in row})
    table = _table([key if key == "context" else "length L", *(f"{x:g}" for x in xs)],
                   [[esc(name), *(row.get(x, "—") for x in xs)] for name, row in cells.items()
                    if name not in unmeasured], "sweep") if xs else ""
    table += "".join(f'<p class="empty">{esc(name)}: {esc("; ".join(sorted(statuses)))}</p>'
                     for name, statuses in unmeasured.items())
    table += f'<p class="note">{esc(note)}</p>' if note else ""
    if not any(len(s) > 1 for s in series.values()):
        return (f"<h3>{esc(title)}</h3><p class=\"empty\">{esc(title)}: fewer than two points measured in any "
                f"runtime; no curve to draw.</p><p>Median latency (ms):</p>{table}")
    svg = plots.lines(series, x_label, "median latency (ms; log scale)", log_x=True, log_y=True)
    return (f'<h3>{esc(title)}</h3><div class="pair"><figure>{svg}</figure><div><p>Median latency (ms) per point '
            f"(hover a value for p90, runs, max |Δ| vs PyTorch and the artifact):</p>{table}</div></div>")


def _variants(report: dict[str, Any], command: Sequence[str] | None) -> str:
    manifest = _dict(report.get("manifest"))
    latency = {str(r.get("artifact")): _num(r.get("median_ms")) for r in _list(report.get("rows")) if isinstance(r, dict)}
    entries = [a for a in _list(manifest.get("artifacts")) if isinstance(a, dict)]
    entries += [a for a in _list(_dict(report.get("adapter_bundle")).get("artifacts")) if isinstance(a, dict)]
    out = []
    adapters = [a for a in _list(manifest.get("adapters")) if isinstance(a, dict)]
    if adapters:
        out.append(_table(("adapter", "domain", "rank", "alpha", "description", "sha256"), [
            [esc(a.get("name", "")), esc(a.get("domain") or "—"), _fmt(a.get("rank"), ".0f"), _fmt(a.get("alpha"), "g"),
             esc(a.get("description") or "—"), f"<code>{esc(str(a.get('sha256') or '—')[:16])}</code>"]
            for a in adapters]))
    rows = []
    for a in entries:
        for v in (x for x in _list(a.get("variants")) if isinstance(x, dict)):
            check = _dict(v.get("verification"))
            key = str(a.get("file")) + ("" if v.get("name") == "base" else f"#{v.get('name')}")
            ms = latency.get(key)
            rows.append([f"<code>{esc(a.get('file', ''))}</code>", esc(v.get("name", "")), esc(v.get("adapter") or "—"),
                         f"<code>{esc(json.dumps(v.get('select'), default=str))}</code>", esc(check.get("status", "—")),
                         _fmt(check.get("max_abs_diff"), ".1e"), _fmt(check.get("accuracy"), ".2%"),
                         esc(NOT_BENCHMARKED if ms is None else f"{ms:.3f}")])
    if rows:
        out.append(_table(("artifact", "variant", "adapter", "select", "verification", "max |Δ|", "accuracy",
                           "median ms"), rows))
    skipped = _dict(_dict(report.get("adapter_bundle")).get("skipped"))
    out += [f'<p class="empty">{esc(fmt)}: not packaged: {esc(why)}</p>' for fmt, why in skipped.items()]
    return "".join(out) or '<p class="empty">No adapter variants: this bundle holds the base model only.</p>'


def _placement(report: dict[str, Any], command: Sequence[str] | None) -> str:
    rows = []
    for a in (x for x in _list(_dict(report.get("manifest")).get("artifacts")) if isinstance(x, dict)):
        for accel, p in _dict(a.get("placement")).items():
            p = _dict(p)
            worst = [_dict(o) for o in _list(p.get("offenders"))]
            offenders = ", ".join(f"{o.get('op', '?')} ×{o.get('count', '?')}" for o in worst[:4])
            found = (f"{_fmt(p.get('coverage'), '.0%')} of {_fmt(p.get('ops'), '.0f')} ops on; "
                     f"{_fmt(p.get('islands'), '.0f')} islands" if not p.get("not_run") else "not run")
            detail = p.get("not_run") or "; ".join(
                [f"{o.get('op')}: {o.get('reason', '')} {o.get('fix', '')}".strip() for o in worst[:2]]
                + [str(n) for n in _list(p.get("notes"))[:1]])
            rows.append([f"<code>{esc(a.get('file') or a.get('format'))}</code>", esc(accel), esc(p.get("source", "")),
                         esc(found), esc(offenders or "—"), f'<span class="detail">{esc(detail)}</span>'])
    gate = _dict(report.get("placement_gate"))
    out = [_table(("artifact", "accelerator", "source", "placement", "falls back", "detail"), rows)] if rows else \
        ['<p class="empty">No placement recorded for these artifacts.</p>']
    if gate:
        verdict = "passed" if gate.get("passed") else f"failed: {gate.get('message', '')}"
        out.append(f"<p>Placement gate (require {esc(gate.get('require'))}, min coverage "
                   f"{esc(gate.get('min_coverage'))}%): <b>{esc(verdict)}</b></p>")
    return "".join(out)


def _provenance(report: dict[str, Any], command: Sequence[str] | None) -> str:
    manifest = _dict(report.get("manifest"))
    source = _dict(manifest.get("source"))
    recipe = _dict(report.get("recipe"))
    facts = [("command that wrote this page", shlex.join(command) if command else "not recorded")]
    if report["kind"] == "run":
        facts += [("recipe", recipe.get("path") or "not recorded"),
                  ("checkpoint", report.get("checkpoint") or "—"), ("bundle", report.get("bundle") or "—")]
    facts += [("source", " · ".join(f"{k}: {v}" for k, v in source.items() if v not in (None, "", [])) or "—"),
              ("edgekit", manifest.get("edgekit_version", "—")), ("created", manifest.get("created", "—"))]
    stages = _dict(report.get("stage_seconds"))
    if stages:
        facts.append(("stage seconds", ", ".join(f"{k} {v}" for k, v in stages.items())))
    training = _dict(report.get("training"))
    if training:
        facts.append(("training", ", ".join(f"{k} {_fmt(v, '.4g') if _num(v) is not None else v}"
                                            for k, v in training.items())))
    out = [_table(("what", "value"), [[esc(k), f"<code>{esc(v)}</code>"] for k, v in facts], "facts")]
    tools = _dict(manifest.get("tools"))
    out.append(_table(("tool", "version"), [[esc(k), esc(v)] for k, v in tools.items()], "tools") if tools
               else '<p class="empty">No tool versions recorded.</p>')
    return "".join(out)


# the page's sections, in order: (anchor, title, writer → escaped HTML, or None to leave the section out)
SECTIONS: tuple[tuple[str, str, Callable[[dict[str, Any], Sequence[str] | None], str | None]], ...] = (
    ("artifacts", "Artifacts", _artifacts),
    ("size-latency", "Size vs latency", _size_latency),
    ("sqnr", "Per-layer SQNR", _sqnr),
    ("sequence", "Sequence scaling", _sequence),
    ("variants", "Adapter variants", _variants),
    ("placement", "Placement", _placement),
    ("provenance", "Commands and tool versions", _provenance),
)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0 auto;max-width:1440px;
padding:0 24px 48px;background:#fafafa}
header{border-bottom:2px solid #ddd;margin-bottom:8px}h1{margin:20px 0 4px;font-size:24px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e4e4e4;padding-bottom:4px}h3{font-size:14px;margin:14px 0 4px}
.sub{color:#555;margin:0 0 8px}nav{margin:0 0 10px}nav a{color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;background:#fff;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f0f0f0}
table.artifacts td:nth-child(n+7):nth-child(-n+14){text-align:right;white-space:nowrap}
code{font:12px ui-monospace,Menlo,Consolas,monospace;overflow-wrap:anywhere}
table.artifacts td:nth-child(2) code,table.artifacts td:nth-child(5){white-space:nowrap}
table.artifacts td:last-child{min-width:220px}td:first-child code{white-space:nowrap}.wrap{overflow-x:auto}
.st-verified{color:#1b7a1b;font-weight:600}.st-exported{color:#a06800;font-weight:600}
.st-failed{color:#b3261e;font-weight:600}.empty{color:#666;font-style:italic}.detail{color:#555;font-size:12px}
.note{max-width:760px;color:#333;background:#f3f6fa;border-left:3px solid #1f5fa8;padding:6px 10px}
table.sweep td:nth-child(n+2){text-align:right;white-space:nowrap}
.pair{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap}.pair>div{flex:1 1 300px;max-width:620px}
figure{margin:8px 0;background:#fff;border:1px solid #e0e0e0;display:inline-block;padding:6px}
svg .tick{font-size:11px;fill:#444}svg .axis{font-size:12px;fill:#222}svg .plabel{font-size:11px;fill:#222}
"""
