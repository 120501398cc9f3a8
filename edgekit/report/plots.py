"""Hand-written inline SVG plots for the HTML report: a scatter with a colour scale, horizontal bars, lines.

Every string drawn (labels, titles, tooltips) is escaped here; every data mark carries ``class="point"``,
``"bar"`` or ``"line"`` and a ``<title>`` tooltip, so a page can be checked for real data points.
No matplotlib: the page stays small, deterministic and quick to write."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Sequence

WIDTH, HEIGHT = 640, 360
MARGIN = {"left": 72, "right": 150, "top": 24, "bottom": 52}
# a colour-blind-safe ramp (viridis stops), low → high
RAMP = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
SERIES = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
UNKNOWN = "#9e9e9e"


@dataclass(frozen=True)
class Point:
    """One mark: position, colour value (None: unknown, drawn grey) and its label."""

    x: float
    y: float
    value: float | None
    label: str


def esc(text: object) -> str:
    """``text`` safe in HTML/SVG text and attribute values."""
    return escape(str(text), quote=True)


def _num(v: float) -> str:
    return f"{v:.4g}"


def ramp_colour(v: float | None, lo: float, hi: float) -> str:
    """The colour of ``v`` on RAMP between ``lo`` and ``hi`` (grey when ``v`` is None)."""
    if v is None or not math.isfinite(v):
        return UNKNOWN
    t = 0.0 if hi <= lo else min(1.0, max(0.0, (v - lo) / (hi - lo)))
    i = min(int(t * (len(RAMP) - 1)), len(RAMP) - 2)
    f = t * (len(RAMP) - 1) - i
    a, b = (tuple(int(c[k:k + 2], 16) for k in (1, 3, 5)) for c in (RAMP[i], RAMP[i + 1]))
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b))


class _Axes:
    """Maps data to pixels (linear or log10) and draws the frame, ticks and axis labels. A log x axis with a 0 among
    its values (context positions) maps x to log10(1 + x), labelled with the values themselves."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float], log_x: bool = False, zero_y: bool = True,
                 log_y: bool = False) -> None:
        self.log_x = log_x and min(xs) >= 0
        shift = 1.0 if self.log_x and min(xs) == 0 else 0.0
        self.fx = (lambda v: math.log10(v + shift)) if self.log_x else (lambda v: v)
        self.log_y = log_y and min(ys) > 0
        self.fy = (lambda v: math.log10(v)) if self.log_y else (lambda v: v)
        self.x0, self.x1 = _span([self.fx(x) for x in xs], not self.log_x)
        self.y0, self.y1 = _span([self.fy(y) for y in ys], zero_y and not self.log_y)
        # ticks: the data's own x values on a log axis (sequence lengths), round numbers otherwise
        self.xticks = sorted(set(xs)) if self.log_x and len(set(xs)) <= 8 else _nice(self.x0, self.x1)
        if self.log_x and len(set(xs)) > 8:
            self.xticks = [10 ** t - shift for t in self.xticks]
        self.yticks = _log_ticks(self.y0, self.y1) if self.log_y else _nice(self.y0, self.y1)
        self.w = WIDTH - MARGIN["left"] - MARGIN["right"]
        self.h = HEIGHT - MARGIN["top"] - MARGIN["bottom"]

    def px(self, x: float) -> float:
        return MARGIN["left"] + (self.fx(x) - self.x0) / (self.x1 - self.x0) * self.w

    def py(self, y: float) -> float:
        return MARGIN["top"] + self.h - (self.fy(y) - self.y0) / (self.y1 - self.y0) * self.h

    def frame(self, x_label: str, y_label: str) -> list[str]:
        left, top, bottom = MARGIN["left"], MARGIN["top"], MARGIN["top"] + self.h
        out = [f'<rect x="{left}" y="{top}" width="{self.w}" height="{self.h}" fill="#fff" stroke="#bbb"/>']
        for y in self.yticks:
            out.append(f'<line x1="{left}" x2="{left + self.w}" y1="{self.py(y):.1f}" y2="{self.py(y):.1f}" '
                       f'stroke="#eee"/><text x="{left - 6}" y="{self.py(y) + 4:.1f}" text-anchor="end" '
                       f'class="tick">{_num(y)}</text>')
        for x in self.xticks:
            out.append(f'<text x="{self.px(x):.1f}" y="{bottom + 16}" text-anchor="middle" class="tick">'
                       f'{_num(x)}</text>')
        out.append(f'<text x="{left + self.w / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle" class="axis">'
                   f'{esc(x_label)}</text>')
        out.append(f'<text transform="translate(16,{top + self.h / 2:.1f}) rotate(-90)" text-anchor="middle" '
                   f'class="axis">{esc(y_label)}</text>')
        return out


def _nice(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 × 10^k) inside ``[lo, hi]``."""
    raw = (hi - lo) / max(count - 1, 1) or 1.0
    step = min((m * 10 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Values 1, 2 and 5 × 10^k between 10^lo and 10^hi (log10 bounds); fewer marks when the span is wide."""
    marks = (1, 2, 5) if hi - lo < 3 else (1,)
    first, last = max(math.floor(lo), -300), min(math.ceil(hi), 300)  # a float's range (a damaged report's values)
    stride = max(1, math.ceil((last - first) / 10))  # at most about ten decades labelled
    ticks = [m * 10.0 ** k for k in range(first, last + 1, stride) for m in marks]
    return [t for t in ticks if lo <= math.log10(t) <= hi]


def _span(values: list[float], from_zero: bool) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if from_zero and lo >= 0:
        lo = 0.0
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    return (lo if from_zero and lo == 0 else lo - pad), hi + pad


def _svg(body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
            f'height="{HEIGHT}" role="img" aria-label="{esc(label)}">' + "".join(body) + "</svg>")


def scatter(points: Sequence[Point], x_label: str, y_label: str, value_label: str, log_x: bool = False) -> str:
    """A scatter of ``points`` coloured by their value on RAMP, with a colour bar and a label at each point."""
    if not points:
        raise ValueError("a scatter needs at least one point")
    axes = _Axes([p.x for p in points], [p.y for p in points], log_x)
    known = [p.value for p in points if p.value is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
    body = axes.frame(x_label, y_label)
    for p in points:
        x, y = axes.px(p.x), axes.py(p.y)
        value = "unknown" if p.value is None else f"{p.value:.4g}"
        body.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="7" fill="{ramp_colour(p.value, lo, hi)}" '
                    f'stroke="#333"><title>{esc(p.label)}: x={_num(p.x)}, y={_num(p.y)}, {esc(value_label)}='
                    f'{esc(value)}</title></circle>'
                    f'<text x="{x + 10:.1f}" y="{y - 8:.1f}" class="plabel">{esc(p.label)}</text>')
    return _svg(body + _colour_bar(lo, hi, value_label, bool(known), len(known) < len(points)), y_label)


def _colour_bar(lo: float, hi: float, label: str, known: bool, some_unknown: bool) -> list[str]:
    x, top, height = WIDTH - MARGIN["right"] + 40, MARGIN["top"] + 20, 160
    out = [f'<text x="{x}" y="{top - 8}" class="axis">{esc(label)}</text>']
    if known:
        steps = 20
        out += [f'<rect x="{x}" y="{top + height * (1 - (i + 1) / steps):.1f}" width="16" '
                f'height="{height / steps + 0.5:.1f}" fill="{ramp_colour(lo + (hi - lo) * (i + 0.5) / steps, lo, hi)}"/>'
                for i in range(steps)]
        out += [f'<text x="{x + 22}" y="{top + 4}" class="tick">{_num(hi)}</text>',
                f'<text x="{x + 22}" y="{top + height + 4}" class="tick">{_num(lo)}</text>']
    if some_unknown or not known:
        out.append(f'<circle cx="{x + 8}" cy="{top + height + 24}" r="6" fill="{UNKNOWN}" stroke="#333"/>'
                   f'<text x="{x + 22}" y="{top + height + 28}" class="tick">unknown</text>')
    return out


def hbars(items: Sequence[tuple[str, float | None]], x_label: str, none_text: str = "exact") -> str:
    """Horizontal bars, one per ``(label, value)``; a None value is drawn as text (``none_text``), no bar."""
    if not items:
        raise ValueError("a bar chart needs at least one bar")
    row, left, width = 18, 220, WIDTH - 220 - 40
    values = [v for _, v in items if v is not None]
    top_value = max(values + [1e-9])
    height = MARGIN["top"] + row * len(items) + 40
    body = []
    for i, (label, v) in enumerate(items):
        y = MARGIN["top"] + i * row
        body.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" class="tick">{esc(label[-34:])}</text>')
        if v is None:
            body.append(f'<text x="{left + 4}" y="{y + 13}" class="tick">{esc(none_text)}</text>')
            continue
        w = max(1.0, max(v, 0.0) / top_value * width)
        body.append(f'<rect class="bar" x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" '
                    f'fill="{ramp_colour(v, 0, max(top_value, 40.0))}"><title>{esc(label)}: {v:.2f}</title></rect>'
                    f'<text x="{left + w + 4:.1f}" y="{y + 13}" class="tick">{v:.1f}</text>')
    body.append(f'<text x="{left + width / 2:.0f}" y="{height - 12}" text-anchor="middle" class="axis">'
                f'{esc(x_label)}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
            f'height="{height}" role="img" aria-label="{esc(x_label)}">' + "".join(body) + "</svg>")


def lines(series: dict[str, Sequence[tuple[float, float]]], x_label: str, y_label: str, log_x: bool = False,
          log_y: bool = False) -> str:
    """One polyline with markers per named series of ``(x, y)`` points (drawn in x order), and a legend."""
    points = [p for s in series.values() for p in s]
    if not points:
        raise ValueError("a line plot needs at least one point")
    axes = _Axes([x for x, _ in points], [y for _, y in points], log_x, log_y=log_y)
    body = axes.frame(x_label, y_label)
    for i, (name, pts) in enumerate(series.items()):
        colour, pts = SERIES[i % len(SERIES)], sorted(pts)
        path = " ".join(f"{axes.px(x):.1f},{axes.py(y):.1f}" for x, y in pts)
        body.append(f'<polyline class="line" points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        body += [f'<circle class="point" cx="{axes.px(x):.1f}" cy="{axes.py(y):.1f}" r="4" fill="{colour}">'
                 f'<title>{esc(name)}: {_num(x)} → {_num(y)}</title></circle>' for x, y in pts]
        ly = MARGIN["top"] + 16 + i * 18
        body.append(f'<rect x="{WIDTH - MARGIN["right"] + 14}" y="{ly - 9}" width="12" height="12" fill="{colour}"/>'
                    f'<text x="{WIDTH - MARGIN["right"] + 32}" y="{ly + 1}" class="tick">{esc(name[:22])}</text>')
    return _svg(body, y_label)
