"""Small inline SVG charts for the console (no script, no library): a bar series."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup


def bars(values: Sequence[float], *, label: str, width: int = 240, height: int = 48) -> Markup:
    """A bar chart of ``values`` (oldest first) with ``label`` as its accessible title."""
    n = max(len(values), 1)
    top = max((v for v in values), default=0) or 1
    step = width / n
    rects = []
    for i, value in enumerate(values):
        h = 0 if value <= 0 else max(1.0, value / top * (height - 2))
        rects.append(
            f'<rect x="{i * step:.1f}" y="{height - h:.1f}" width="{max(step - 1, 1):.1f}" '
            f'height="{h:.1f}"><title>{value:g}</title></rect>'
        )
    return Markup(
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" aria-label="{escape(label)}"><title>{escape(label)}</title>'
        + "".join(rects)
        + "</svg>"
    )
