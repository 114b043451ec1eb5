"""Charts as inline SVG, drawn on the server: pure functions returning :class:`markupsafe.Markup`.

Example:
    >>> svg = bar_chart([("1.0.0", 3), ("<b>", 1)], title="Devices by OS version")
    >>> "&lt;b&gt;" in svg and "<b>" not in svg
    True

Every label and title is escaped; the SVG uses only presentation attributes and
``class`` (styled by ``console.css``), never ``style=``, so the strict CSP holds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

__all__ = ["MAX_BARS", "MAX_POINTS", "MAX_SERIES", "bar_chart", "day_window", "sparkline", "time_series"]

#: Most bars drawn (the rest are summed into "other").
MAX_BARS = 30
#: Most series in one time chart, and most points per series (the rest are dropped).
MAX_SERIES = 6
MAX_POINTS = 2000
_LABEL_CHARS = 40


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _label(text: str) -> str:
    text = str(text)
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"


def bar_chart(items: Sequence[tuple[str, float]], *, title: str = "", width: int = 480, bar_height: int = 18) -> Markup:
    """Horizontal bars, one per ``(label, value)``; values must be ≥ 0."""
    rows = [(str(label), max(0.0, float(value))) for label, value in items]
    if len(rows) > MAX_BARS:
        rows = [*rows[: MAX_BARS - 1], ("other", sum(v for _, v in rows[MAX_BARS - 1 :]))]
    label_w = 160
    value_w = 60
    plot_w = max(40, width - label_w - value_w)
    top = max((v for _, v in rows), default=0.0) or 1.0
    height = max(1, len(rows)) * (bar_height + 4) + 4
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart bar-chart" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{escape(title)}</title>",
    ]
    if not rows:
        parts.append(f'<text x="4" y="{bar_height}" class="chart-empty">no data</text>')
    for i, (label, value) in enumerate(rows):
        y = 4 + i * (bar_height + 4)
        w = plot_w * value / top
        parts.append(
            f'<text x="{label_w - 6}" y="{y + bar_height - 5}" text-anchor="end" class="chart-label">'
            f"{escape(_label(label))}</text>"
            f'<rect x="{label_w}" y="{y}" width="{_num(w)}" height="{bar_height}" class="bar">'
            f"<title>{escape(label)}: {_num(value)}</title></rect>"
            f'<text x="{_num(label_w + w + 4)}" y="{y + bar_height - 5}" class="chart-value">{_num(value)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text above is escaped


def _ts(at: dt.datetime) -> float:
    return at.timestamp()


def time_series(
    series: Mapping[str, Sequence[tuple[dt.datetime, float]]],
    *,
    title: str = "",
    width: int = 640,
    height: int = 200,
) -> Markup:
    """Lines over time, one per named series (at most :data:`MAX_SERIES`), with a legend."""
    named = [(str(name), list(points)[:MAX_POINTS]) for name, points in list(series.items())[:MAX_SERIES]]
    pad_l, pad_r, pad_t, pad_b = 44, 8, 8, 36
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    every = [p for _, pts in named for p in pts]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart time-series" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" y2="{pad_t + plot_h}" class="axis"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + plot_h}" class="axis"/>',
    ]
    if not every:
        parts.append(f'<text x="{pad_l + 8}" y="{pad_t + plot_h // 2}" class="chart-empty">no data</text></svg>')
        return Markup("".join(parts))  # noqa: S704 - fixed text
    t0 = min(_ts(t) for t, _ in every)
    t1 = max(_ts(t) for t, _ in every)
    span = (t1 - t0) or 1.0
    top = max(0.0, *(v for _, v in every)) or 1.0

    def x(at: dt.datetime) -> str:
        return _num(pad_l + plot_w * (_ts(at) - t0) / span)

    def y(value: float) -> str:
        return _num(pad_t + plot_h - plot_h * max(0.0, value) / top)

    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + 10}" text-anchor="end" class="chart-label">{_num(top)}</text>')
    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" text-anchor="end" class="chart-label">0</text>')
    first = dt.datetime.fromtimestamp(t0, dt.UTC).strftime("%Y-%m-%d %H:%M")
    last = dt.datetime.fromtimestamp(t1, dt.UTC).strftime("%Y-%m-%d %H:%M")
    parts.append(f'<text x="{pad_l}" y="{pad_t + plot_h + 14}" class="chart-label">{first}</text>')
    parts.append(
        f'<text x="{pad_l + plot_w}" y="{pad_t + plot_h + 14}" text-anchor="end" class="chart-label">{last}</text>'
    )
    for i, (name, points) in enumerate(named):
        ordered = sorted(points, key=lambda p: p[0])
        coords = " ".join(f"{x(t)},{y(v)}" for t, v in ordered)
        parts.append(f'<polyline points="{coords}" fill="none" class="series series-{i}"><title>{escape(name)}</title>')
        parts.append("</polyline>")
        lx = pad_l + i * 120
        parts.append(
            f'<rect x="{lx}" y="{height - 12}" width="10" height="10" class="legend series-{i}"/>'
            f'<text x="{lx + 14}" y="{height - 3}" class="chart-label">{escape(_label(name))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text above is escaped


def sparkline(values: Sequence[float], *, width: int = 100, height: int = 20) -> Markup:
    """A tiny line of values in order (a trend in a table cell)."""
    points = [max(0.0, float(v)) for v in values][:MAX_POINTS]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart sparkline" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    ]
    if len(points) >= 1:
        top = max(points) or 1.0
        step = width / max(1, len(points) - 1)
        coords = " ".join(f"{_num(i * step)},{_num(height - 1 - (height - 2) * v / top)}" for i, v in enumerate(points))
        parts.append(f'<polyline points="{coords}" fill="none" class="series series-0"/>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - numbers only


_DAY_MINUTES = 24 * 60


def day_window(start: str | None, minutes: int | None, *, width: int = 480, height: int = 44) -> Markup:
    """A UTC day from 00:00 to 24:00 with a maintenance window shaded (``HH:MM`` start, duration in minutes).

    A window past midnight is drawn as its two parts; no window shades the whole day (updates at any time).
    """
    pad = 8
    plot_w, bar_h = width - 2 * pad, 16
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart day-window" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        "<title>Maintenance window (UTC)</title>",
        f'<rect x="{pad}" y="4" width="{plot_w}" height="{bar_h}" class="day"/>',
    ]
    spans: list[tuple[int, int]] = [(0, _DAY_MINUTES)]
    if start is not None and minutes:
        hours, mins = (int(p) for p in start.split(":", 1))
        first = (hours * 60 + mins) % _DAY_MINUTES
        length = max(0, min(int(minutes), _DAY_MINUTES))
        end = first + length
        spans = [(first, min(end, _DAY_MINUTES))]
        if end > _DAY_MINUTES:
            spans.append((0, end - _DAY_MINUTES))
    for a, b in spans:
        x = pad + plot_w * a / _DAY_MINUTES
        w = plot_w * (b - a) / _DAY_MINUTES
        parts.append(f'<rect x="{_num(x)}" y="4" width="{_num(w)}" height="{bar_h}" class="window"/>')
    for hour in range(0, 25, 6):
        x = pad + plot_w * hour / 24
        anchor = "start" if hour == 0 else ("end" if hour == 24 else "middle")
        parts.append(
            f'<line x1="{_num(x)}" y1="4" x2="{_num(x)}" y2="{4 + bar_h + 3}" class="axis"/>'
            f'<text x="{_num(x)}" y="{4 + bar_h + 15}" text-anchor="{anchor}" class="chart-label">{hour:02d}:00</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - numbers and fixed text only
