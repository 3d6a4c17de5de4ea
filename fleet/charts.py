"""Server-rendered SVG charts: no JavaScript, no inline styles (the CSP forbids them),
every label escaped. Colours are classes styled in fleet.css (``series-0`` …)."""

from __future__ import annotations

from datetime import datetime

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

SERIES = 8  # distinct colours; the rest is drawn as "other"
WIDTH, HEIGHT, PAD = 720, 200, 36


def _n(value: float) -> str:
    return f"{value:.1f}"


def money(value: float) -> str:
    return f"${value:,.2f}"


def tokens(value: float) -> str:
    return f"{value:,.0f} tokens"


def stacked_bars(
    hours: list[datetime], series: dict[str, list[float]], *, title: str, label: str = "%H:00"
) -> SafeString:
    """Spend per hour, one bar per hour, stacked by ``series`` (label → value per
    hour). The biggest series get their own colour; the rest are "other"."""
    ranked = sorted(series, key=lambda k: -sum(series[k]))
    shown = ranked[: SERIES - 1] if len(ranked) > SERIES else ranked
    rest = [k for k in ranked if k not in shown]
    rows = [(k, series[k]) for k in shown]
    if rest:
        rows.append(("other", [sum(series[k][i] for k in rest) for i in range(len(hours))]))
    totals = [sum(values[i] for _, values in rows) for i in range(len(hours))]
    top = max(totals, default=0) or 1.0
    plot_w, plot_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    bar_w = plot_w / max(len(hours), 1)
    parts = [
        format_html(
            '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}"><title>{}</title>',
            WIDTH,
            HEIGHT + 20 * ((len(rows) + 3) // 4),
            title,
            title,
        ),
        format_html('<text x="{}" y="{}" class="axis">{}</text>', 4, PAD - 8, money(top)),
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" class="axis-line"/>',
            PAD,
            HEIGHT - PAD,
            WIDTH - PAD,
            HEIGHT - PAD,
        ),
    ]
    for i, hour in enumerate(hours):
        y = HEIGHT - PAD
        for n, (name, values) in enumerate(rows):
            value = values[i]
            if not value:
                continue
            h = plot_h * value / top
            y -= h
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" '
                    'class="series-{}"><title>{} {}: {}</title></rect>',
                    _n(PAD + i * bar_w + 1),
                    _n(y),
                    _n(max(bar_w - 2, 1)),
                    _n(h),
                    n,
                    hour.strftime("%d %H:00"),
                    name,
                    money(value),
                )
            )
        if i % max(len(hours) // 6, 1) == 0:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" class="axis">{}</text>',
                    _n(PAD + i * bar_w),
                    HEIGHT - PAD + 14,
                    hour.strftime(label),
                )
            )
    for n, (name, _) in enumerate(rows):  # the legend, four to a line
        x, y = PAD + (n % 4) * (plot_w / 4), HEIGHT + 20 * (n // 4)
        parts.append(
            format_html(
                '<rect x="{}" y="{}" width="10" height="10" class="series-{}"/>'
                '<text x="{}" y="{}" class="legend">{}</text>',
                _n(x),
                _n(y - 9),
                n,
                _n(x + 14),
                _n(y),
                name[:28],
            )
        )
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(str(p) for p in parts))


def burndown(
    hours: list[datetime],
    cumulative: list[float],
    cap: float,
    projected_hours: float | None,
    *,
    title: str,
    fmt=money,
) -> SafeString:
    """Spend so far against a cap, with the projection (dashed) of the last hour's
    burn rate up to where it meets the cap."""
    plot_w, plot_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    span = len(hours) + (min(projected_hours, len(hours)) if projected_hours else 0)
    step = plot_w / max(span, 1)
    top = max([cap, *cumulative]) or 1.0

    def y(value: float) -> float:
        return HEIGHT - PAD - plot_h * value / top

    points = " ".join(f"{PAD + i * step:.1f},{y(v):.1f}" for i, v in enumerate(cumulative))
    parts = [
        format_html(
            '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}"><title>{}</title>',
            WIDTH,
            HEIGHT,
            title,
            title,
        ),
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" class="cap-line"/>'
            '<text x="{}" y="{}" class="axis">cap {}</text>',
            PAD,
            _n(y(cap)),
            WIDTH - PAD,
            _n(y(cap)),
            PAD + 4,
            _n(y(cap) - 4),
            fmt(cap),
        ),
        format_html('<polyline points="{}" class="spent-line"/>', points),
    ]
    if projected_hours and cumulative:
        last_x = PAD + (len(cumulative) - 1) * step
        reach = min(projected_hours, len(hours))
        end_value = cumulative[-1] + (cap - cumulative[-1]) * (reach / projected_hours)
        parts.append(
            format_html(
                '<line x1="{}" y1="{}" x2="{}" y2="{}" class="projection"/>',
                _n(last_x),
                _n(y(cumulative[-1])),
                _n(last_x + reach * step),
                _n(y(end_value)),
            )
        )
    if hours:
        parts.append(
            format_html(
                '<text x="{}" y="{}" class="axis">{}</text><text x="{}" y="{}" '
                'class="axis">{}</text>',
                PAD,
                HEIGHT - PAD + 14,
                hours[0].strftime("%d %H:00"),
                _n(PAD + (len(hours) - 1) * step),
                HEIGHT - PAD + 14,
                "now",
            )
        )
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(str(p) for p in parts))
