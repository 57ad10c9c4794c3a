"""The history of one analyte as an inline SVG: values over time (dates to scale), the
reference range shaded, axes with dates and values as a French report writes them.
Server-side, no script: the page's Content-Security-Policy allows none."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup

from . import formatting as fmt


@dataclass(frozen=True)
class Point:
    when: datetime
    value: float
    label: str        # the value as shown ("12,2 mg/L")
    day: str          # dd/mm/yyyy


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / max(ticks, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def history_svg(points: list[Point], low: float | None, high: float | None, unit: str, title: str,
                width: int = 960, height: int = 340) -> Markup:
    """The plot (points oldest first); an empty Markup for no point."""
    if not points:
        return Markup("")
    left, right, top, bottom = 70, 50, 30, 50
    values = [p.value for p in points] + [v for v in (low, high) if v is not None]
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    pad = (hi - lo) * 0.12
    lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    t0, t1 = points[0].when.timestamp(), points[-1].when.timestamp()
    if t1 == t0:
        t0, t1 = t0 - 86400 * 15, t1 + 86400 * 15
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(when: datetime) -> float:
        return round(left + (when.timestamp() - t0) / (t1 - t0) * plot_w, 1)

    def y(value: float) -> float:
        return round(top + (hi - value) / (hi - lo) * plot_h, 1)

    e = html.escape
    out = [f'<svg class="history" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif" font-size="12">'
           f'<title>{e(title)}</title>']
    if low is not None or high is not None:
        band_top = y(high) if high is not None else top
        band_bottom = y(low) if low is not None else top + plot_h
        ref = "–".join(fmt.number(v) for v in (low, high) if v is not None)
        out.append(f'<rect class="reference" x="{left}" y="{band_top}" width="{plot_w}" '
                   f'height="{max(band_bottom - band_top, 1)}" fill="#dff0df"/>'
                   f'<text x="{left + 6}" y="{band_bottom - 6}" fill="#2e6b2e">'
                   f'valeurs de référence {e(ref)} {e(unit)}</text>')
    tick = lo
    while tick <= hi + step / 2:
        ty = y(tick)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{ty}" y2="{ty}" stroke="#e3e7ee"/>'
                   f'<text x="{left - 8}" y="{ty + 4}" text-anchor="end" fill="#5b6677">{e(fmt.number(tick))}</text>')
        tick += step
    out.append(f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" '
               f'text-anchor="middle" fill="#5b6677">{e(unit)}</text>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#8a94a3"/>'
               f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#8a94a3"/>')
    shown = _date_ticks(points)
    for p in shown:
        px = x(p.when)
        out.append(f'<line x1="{px}" x2="{px}" y1="{top + plot_h}" y2="{top + plot_h + 5}" stroke="#8a94a3"/>'
                   f'<text class="date" x="{px}" y="{top + plot_h + 20}" text-anchor="middle" fill="#1d2430">'
                   f'{e(p.day)}</text>')
    if len(points) > 1:
        out.append('<polyline fill="none" stroke="#1f5fa8" stroke-width="2" points="'
                   + " ".join(f"{x(p.when)},{y(p.value)}" for p in points) + '"/>')
    for p in points:
        out.append(f'<circle class="point" cx="{x(p.when)}" cy="{y(p.value)}" r="4" fill="#1f5fa8">'
                   f'<title>{e(p.day)} : {e(p.label)}</title></circle>'
                   f'<text x="{x(p.when)}" y="{y(p.value) - 9}" text-anchor="middle" fill="#1f3b63">'
                   f'{e(fmt.number(p.value))}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def _date_ticks(points: list[Point], most: int = 8) -> list[Point]:
    """The points whose dates label the time axis: all of them, or an even pick of `most`."""
    if len(points) <= most:
        return points
    step = (len(points) - 1) / (most - 1)
    return [points[round(i * step)] for i in range(most)]
