"""The email page's plot: the daemon's verdicts and the corrections, day by day.

Drawn here as SVG markup, inlined into the page: no JavaScript library, no matplotlib
at run time, nothing fetched (the dashboard's Content-Security-Policy allows neither
scripts nor outside resources). Colours are SVG presentation attributes (``fill=``),
not ``style=`` attributes, which that policy would block. Each day is a stacked bar of
its verdicts (ham, unsure, spam, bottom to top) and a narrow bar of its corrections
beside it; every bar carries a ``<title>`` with its numbers (the browser's tooltip).

Standard library only; every text put into the markup is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

__all__ = ["COLOURS", "daily_svg", "nice_top"]

#: Fill of each series (also the legend's).
COLOURS = {"ham": "#3c8d40", "unsure": "#e0a800", "spam": "#c0392b",
           "corrections": "#2d6cdf"}
_W, _H = 720, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 12, 34, 30


def nice_top(value: float) -> tuple[float, float]:
    """(top of the y axis, step between grid lines) for counts up to ``value``: a
    step of 1, 2 or 5 times a power of ten, at most five steps."""
    value = max(float(value), 1.0)
    for exp in range(0, 20):
        for base in (1, 2, 5):
            step = base * 10 ** exp
            if step * 5 >= value:
                return math.ceil(value / step) * step, step
    return value, value  # pragma: no cover - more than 5e19 messages a day


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str) -> str:
    return (f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{_num(h)}" '
            f'fill="{fill}"><title>{escape(title)}</title></rect>')


def _text(x: float, y: float, text: str, anchor: str = "middle", cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return (f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}"{c}>'
            f"{escape(text)}</text>")


def daily_svg(days: Sequence[Any], title: str = "Verdicts and corrections per day (UTC)"
              ) -> str:
    """SVG markup of the plot of ``days`` (objects with ``day`` (YYYY-MM-DD),
    ``spam``, ``ham``, ``unsure`` and ``corrections``, oldest first)."""
    n = max(len(days), 1)
    top, step = nice_top(max([d.spam + d.ham + d.unsure for d in days]
                              + [d.corrections for d in days] + [1]))
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    slot = plot_w / n

    def y_of(v: float) -> float:
        return _TOP + plot_h - plot_h * v / top

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {_W} {_H}" '
           f'width="{_W}" height="{_H}" role="img" aria-labelledby="plot-title" '
           'font-family="sans-serif" font-size="11" fill="#444">',
           f'<title id="plot-title">{escape(title)}</title>']
    # grid and y labels
    v = 0.0
    while v <= top + 1e-9:
        y = y_of(v)
        out.append(f'<line x1="{_LEFT}" y1="{_num(y)}" x2="{_W - _RIGHT}" y2="{_num(y)}" '
                   f'stroke="{"#999" if v == 0 else "#e3e3e3"}" stroke-width="1"/>')
        out.append(_text(_LEFT - 6, y + 4, _num(v), "end"))
        v += step
    # legend
    x = _LEFT
    for name, label in (("ham", "ham"), ("unsure", "unsure"), ("spam", "spam"),
                        ("corrections", "corrections")):
        out.append(f'<rect x="{x}" y="10" width="12" height="12" fill="{COLOURS[name]}"/>')
        out.append(_text(x + 16, 20, label, "start"))
        x += 24 + 7 * len(label)
    # bars
    every = max(1, math.ceil(n / 16))  # at most 16 date labels
    for i, d in enumerate(days):
        x0 = _LEFT + i * slot
        bw, cw = slot * 0.5, slot * 0.2
        bx = x0 + slot * 0.12
        base = 0
        for name in ("ham", "unsure", "spam"):
            count = getattr(d, name)
            if count:
                out.append(_rect(bx, y_of(base + count), bw, y_of(base) - y_of(base + count),
                                 COLOURS[name], f"{d.day}: {count} {name}"))
                base += count
        if d.corrections:
            out.append(_rect(bx + bw + 2, y_of(d.corrections), cw,
                             y_of(0) - y_of(d.corrections), COLOURS["corrections"],
                             f"{d.day}: {d.corrections} correction"
                             + ("s" if d.corrections != 1 else "")))
        if i % every == 0 or i == n - 1:
            out.append(_text(x0 + slot / 2, _H - _BOTTOM + 16, d.day[5:]))
    if not any(d.spam + d.ham + d.unsure + d.corrections for d in days):
        out.append(_text(_LEFT + plot_w / 2, _TOP + plot_h / 2, "nothing decided in these days"))
    out.append("</svg>")
    return "\n".join(out)
