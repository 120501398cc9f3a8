"""`edgekit report`: one self-contained HTML page from a run or a bundle — the artifacts in its text, plots that
are SVG with real data points, every manifest string escaped, and (where Debian's chromium is installed) a real
browser rendering it to a screenshot that is not blank."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from html import escape
from pathlib import Path

import pytest

import edgekit
from edgekit.benchmarking.sweep import sequence_sweep
from edgekit.cli import main
from edgekit.report.html import load_report, render_html

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert match, f"no section {anchor}"
    return match.group(1)


def _points(svg_html: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r'class="point" cx="([\d.]+)" cy="([\d.]+)"', svg_html)]


# a tiny random SSM classifier: its sweep exports 3 prefill graphs and 1 step graph to ONNX (seconds)
TINY_SSM = {"head": "classify", "in_channels": 3, "num_classes": 2, "d_model": 16, "n_layers": 1, "head_dim": 8,
            "d_state": 4, "chunk": 16, "export_lengths": [16]}
LENGTHS, CONTEXTS = [16, 32, 64], [0, 8, 64]


@pytest.fixture(scope="module")
def tiny_sweep() -> dict:
    """A real sequence sweep (ONNX and PyTorch eager, measured here) of a tiny random SSM."""
    model = edgekit.create_model("ssm", **TINY_SSM).eval()
    return sequence_sweep(model, ["onnx"], LENGTHS, CONTEXTS, threads=1, warmup=1, runs=5)


def _series(svg_html: str) -> dict[str, list[tuple[float, float, float, float]]]:
    """A line plot's marks by series: (x, y) from each tooltip and (cx, cy) pixels, in drawing order."""
    marks = re.findall(r'class="point" cx="([\d.]+)" cy="([\d.]+)" r="4" fill="[^"]+"><title>([^<]*): '
                       r'([\d.e+-]+) → ([\d.e+-]+)</title>', svg_html)
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    for cx, cy, name, x, y in marks:
        out.setdefault(name, []).append((float(x), float(y), float(cx), float(cy)))
    return out


def test_run_page_has_artifacts_plots_and_versions(default_run, tmp_path, capsys):
    out, outcome = default_run
    code = main(["report", str(out), "--html", str(tmp_path / "r.html")])
    assert code == 0, capsys.readouterr().err
    page = (tmp_path / "r.html").read_text()
    artifacts = _section(page, "artifacts")
    for row in outcome.rows:
        assert row["artifact"] in artifacts
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?\s*(https?:|//)""", page, re.I)  # loads nothing
    assert "<script" not in page
    # one point per benchmarked format × precision, placed at different sizes/latencies, coloured by accuracy
    benched = {(r["format"], r["precision"]) for r in outcome.rows
               if r["format"] != "pytorch" and r["median_ms"] is not None and r["size_bytes"] is not None}
    plot = _section(page, "size-latency")
    points = _points(plot)
    assert len(benched) >= 2 and len(points) == len(benched)
    assert len(set(points)) == len(points)
    assert all(f"{fmt} {precision}" in plot for fmt, precision in benched)
    provenance = _section(page, "provenance")
    assert edgekit.__version__ in provenance and "onnxruntime" in provenance and "edgekit report" in provenance


def test_bundle_page_says_not_benchmarked_and_stays_outside_the_bundle(bundle, tmp_path):
    copy_ = tmp_path / "mybundle"
    copy_.mkdir()
    shutil.copy(bundle / "manifest.json", copy_ / "manifest.json")
    written = edgekit.write_html_report(copy_)
    assert written == tmp_path / "mybundle_report.html"  # beside the bundle: not a stray file inside it
    assert sorted(p.name for p in copy_.iterdir()) == ["manifest.json"]
    page = written.read_text()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert all(a["file"] in _section(page, "artifacts") for a in manifest["artifacts"])
    assert "not benchmarked" in _section(page, "artifacts")
    assert "not benchmarked" in _section(page, "size-latency") and "<svg" not in _section(page, "size-latency")
    assert manifest["tools"]["torch"] in _section(page, "provenance")


def _rich_report(default_run) -> dict:
    """The real run's report plus an int8 artifact with per-layer SQNR, adapter variants, placement and three
    prefill lengths: every section of the page gets data."""
    out, _ = default_run
    report = load_report(out)
    manifest = report["manifest"]
    base = copy.deepcopy(manifest["artifacts"][0])
    int8 = {**copy.deepcopy(base), "file": "m_int8.onnx", "precision": "int8", "size_bytes": 150_000}
    int8["verification"]["quantization"] = {"layer_sqnr_db": [
        {"layer": "stem.0", "op": "conv2d", "sqnr_db": 36.6, "quantized": True},
        {"layer": "blocks.0.pointwise", "op": "conv2d", "sqnr_db": 12.5, "quantized": True},
        {"layer": "head", "op": "linear", "sqnr_db": None, "quantized": False}]}
    int8["placement"] = {"xnnpack": {"source": "XNNPACK delegate", "not_run": None, "coverage": 0.9, "ops": 10,
                                     "islands": 2, "offenders": [{"op": "MEAN", "count": 1, "reason": "no kernel",
                                                                  "fix": "use AVERAGE_POOL_2D"}], "notes": []}}
    int8["variants"] = [{"name": "base", "adapter": None, "select": {"signature": "base"},
                         "verification": {"status": "passed", "max_abs_diff": 1e-6, "accuracy": 0.99}},
                        {"name": "rotated", "adapter": "rotated", "select": {"signature": "rotated"},
                         "verification": {"status": "passed", "max_abs_diff": 2e-6, "accuracy": 0.91}}]
    manifest["artifacts"].append(int8)
    row = next(r for r in report["rows"] if r["artifact"] == base["file"])
    report["rows"].append({**row, "artifact": "m_int8.onnx", "precision": "int8", "size_bytes": 150_000,
                           "median_ms": 0.05, "accuracy": 0.95})
    report["rows"] += [{**row, "artifact": f"p{n}.onnx", "graph": f"prefill_L{n}", "median_ms": ms}
                       for n, ms in ((64, 1.0), (256, 3.5), (1024, 14.0))]
    return report


def test_every_section_draws_its_data(default_run):
    page = render_html(_rich_report(default_run), ["edgekit", "report", "x"])
    sqnr = _section(page, "sqnr")
    bars = re.findall(r'class="bar" x="[\d.]+" y="[\d.]+" width="([\d.]+)"', sqnr)
    assert len(bars) == 2 and float(bars[0]) > 2 * float(bars[1])  # 36.6 dB drawn longer than 12.5 dB
    assert "head (linear)" in sqnr and "float" in sqnr
    sequence = _section(page, "sequence")
    points = sorted(_points(sequence))
    assert len(points) == 3 and points[0][1] > points[1][1] > points[2][1]  # longer prefill: slower, higher
    variants = _section(page, "variants")
    assert "rotated" in variants and "91.00%" in variants
    placement = _section(page, "placement")
    assert "MEAN ×1" in placement and "90% of 10 ops" in placement
    assert len(_points(_section(page, "size-latency"))) == 3  # + int8


def test_hostile_strings_are_escaped(default_run):
    report = _rich_report(default_run)
    manifest = report["manifest"]
    manifest["name"] = HOSTILE
    manifest["tools"]["evil"] = HOSTILE
    manifest["artifacts"][-1]["verification"]["quantization"]["layer_sqnr_db"][0]["layer"] = HOSTILE
    manifest["artifacts"][-1]["placement"]["xnnpack"]["offenders"][0]["reason"] = HOSTILE
    manifest["artifacts"][-1]["variants"][1]["name"] = HOSTILE
    for row in report["rows"]:
        row["note"], row["placement"] = HOSTILE, HOSTILE
    report["rows"][-4]["artifact"] = report["rows"][-4]["format"] = HOSTILE  # the int8 row: a plotted point
    page = render_html(report, ["edgekit", "report", HOSTILE])
    assert "<script" not in page and "<img" not in page
    assert page.count("&lt;script&gt;") >= 6
    for section in ("size-latency", "sqnr", "variants", "placement", "provenance"):
        assert "&lt;script&gt;" in _section(page, section), section


@pytest.mark.parametrize("sweep", [
    {"prefill": [{"length": HOSTILE, "format": HOSTILE, "median_ms": "nan"}], "step": "nope", "step_note": HOSTILE},
    {"step": [{"context": i, "format": "onnx", "median_ms": 1e308} for i in range(3)]},  # past any tick range
    {"step": [{"context": 10**30, "format": "onnx", "median_ms": float("nan")}, {"context": -1, "median_ms": -1}]},
    {"prefill": [{}], "step": [{}], "lengths": "x", "seconds": HOSTILE},
    [1, 2], None,
], ids=["strings", "huge", "nan-negative", "empty-points", "list", "none"])
def test_damaged_sequence_sweep_renders_without_crashing(default_run, sweep):
    """report.json is a file: a damaged ``sequence_sweep`` draws what it can, escaped, and never raises."""
    report = _rich_report(default_run)
    report["sequence_sweep"] = sweep
    page = render_html(report)
    assert "<script" not in page and _section(page, "artifacts")


def test_a_users_file_at_html_is_kept_unless_overwrite(default_run, tmp_path, capsys):
    out, _ = default_run
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    assert main(["report", str(out), "--html", str(mine)]) == 1
    assert "is a file edgekit did not write; use --overwrite" in capsys.readouterr().err
    assert mine.read_text() == "<p>my notes</p>"
    assert main(["report", str(out), "--html", str(mine), "--overwrite"]) == 0 and "edgekit report" in mine.read_text()
    assert main(["report", str(out), "--html", str(mine)]) == 0  # now edgekit's own page: replaced without asking
    assert main(["report", str(out), "--html", str(tmp_path)]) == 1 and "is a folder" in capsys.readouterr().err


def test_a_sweep_point_that_differs_from_pytorch_fails_and_is_not_drawn(monkeypatch):
    """The sweep's parity check can fail: against a reference shifted by 1 (or NaN) the real ONNX step is a failed
    point with its |Δ|, no latency, and the page draws no curve from it."""
    import edgekit.benchmarking.sweep as sweep

    real = sweep.graph_outputs
    shifts = iter([1.0, float("nan")])
    monkeypatch.setattr(sweep, "graph_outputs", lambda graph, inputs: [o + next(shifts) if i == 0 else o
                                                                        for i, o in enumerate(real(graph, inputs))])
    model = edgekit.create_model("ssm", **TINY_SSM).eval()
    result = sequence_sweep(model, ["onnx"], [], [0, 8], threads=1, warmup=1, runs=3)
    onnx = [p for p in result["step"] if p["format"] == "onnx"]
    assert len(onnx) == 2 and all(p["status"].startswith("failed: differs from PyTorch") for p in onnx), onnx
    assert all("median_ms" not in p for p in onnx) and 0.99 < onnx[0]["max_abs_diff"] < 1.01
    page = render_html({"kind": "run", "path": ".", "rows": [], "sequence_sweep": result})
    assert "onnx fp32: failed: differs from PyTorch" in _section(page, "sequence").replace("&#x27;", "'")


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    code = main(["report", str(tmp_path)])
    err = capsys.readouterr().err
    assert code != 0 and "neither a run folder" in err and "Traceback" not in err
    (tmp_path / "report.json").write_text(json.dumps({"rows": "nope"}))
    assert main(["report", str(tmp_path)]) != 0
    assert "no 'rows' list" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed (apt-get install chromium): no headless browser check")
def test_chromium_renders_the_page(default_run, tiny_sweep, tmp_path):
    from PIL import Image

    report = _rich_report(default_run)
    report["sequence_sweep"] = tiny_sweep  # with the sequence model's measured curves
    page = tmp_path / "r.html"
    page.write_text(render_html(report))
    flags = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert "cnn_digits_fp32.onnx" in dom.stdout and "Per-layer SQNR" in dom.stdout, dom.stderr[-2000:]
    assert "Step latency vs context position" in dom.stdout and "onnx fp32" in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1300,4200", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 200  # text, tables and plot colours; a blank page has one or two

    def near(targets: set[tuple[int, int, int]], within: int) -> int:
        return sum(n for n, c in colours if any(sum(abs(a - b) for a, b in zip(c, t)) < within for t in targets))

    assert near({(0x44, 0x01, 0x54), (0xfd, 0xe7, 0x25)}, 60) > 50  # ends of the accuracy/SQNR colour ramp
    assert near({(0x1f, 0x77, 0xb4)}, 12) > 40 and near({(0xd6, 0x27, 0x28)}, 12) > 40  # the two sweep curves


def test_sweep_measures_every_point_against_pytorch(tiny_sweep):
    for kind, key, xs in (("prefill", "length", LENGTHS), ("step", "context", CONTEXTS)):
        points = tiny_sweep[kind]
        assert [p[key] for p in points] == [x for x in xs for _ in ("pytorch", "onnx")]
        for p in points:
            assert p["status"] == "ok" and p["median_ms"] > 0 and p["runs"] >= 5, p
        onnx = [p for p in points if p["format"] == "onnx"]
        assert all(p["precision"] == "fp32" and p["source"] == "exported for the sweep" for p in onnx)
        assert all(0 <= p["max_abs_diff"] < 1e-4 for p in onnx)  # the artifact computes what PyTorch does
    assert "fixed size" in tiny_sweep["step_note"] and tiny_sweep["runs"] == 5 and tiny_sweep["seconds"] > 0


def test_sequence_plots_draw_one_point_per_measured_length_in_order(default_run, tiny_sweep):
    report = load_report(default_run[0])
    report["sequence_sweep"] = tiny_sweep
    section = _section(render_html(report), "sequence")
    svgs = re.findall(r"<svg.*?</svg>", section, re.S)
    assert len(svgs) == 2 and "Prefill latency vs sequence length" in section and "Step latency vs context" in section
    for svg, kind, key, xs in ((svgs[0], "prefill", "length", LENGTHS), (svgs[1], "step", "context", CONTEXTS)):
        series = _series(svg)
        assert set(series) == {"pytorch eager", "onnx fp32"}
        for name, marks in series.items():
            fmt = name.split()[0]
            want = {p[key]: p["median_ms"] for p in tiny_sweep[kind] if p["format"] == fmt}
            assert [x for x, *_ in marks] == xs  # one mark per measured length, drawn left to right
            assert [cx for *_, cx, _ in marks] == sorted(cx for *_, cx, _ in marks)
            assert all(abs(y - want[x]) <= 1e-3 * want[x] for x, y, *_ in marks)  # the measured medians
            for (_, y1, _, cy1), (_, y2, _, cy2) in zip(marks, marks[1:]):
                assert (y1 < y2) == (cy1 > cy2) or y1 == y2  # slower is higher on the page
        assert "log scale" in svg and "median latency (ms" in svg
    assert escape(tiny_sweep["step_note"])[:60] in section  # what a flat step curve means, beside it


def test_run_writes_the_page_and_a_report_without_sequence_data_has_no_sequence_plot(default_run):
    out, outcome = default_run
    page = (out / "report.html").read_text()  # written by the pipeline itself (the Python API path)
    assert all(r["artifact"] in _section(page, "artifacts") for r in outcome.rows)
    assert 'id="sequence"' not in page and "<polyline" not in page  # a CNN: no sequence section, no empty plot
    report = load_report(out)
    for row in report["rows"]:
        row["graph"] = "step"  # a sequence bundle benched without a sweep: words, not an empty plot
    section = _section(render_html(report), "sequence")
    assert "<svg" not in section and "not measured" in section and "[bench] contexts" in section
