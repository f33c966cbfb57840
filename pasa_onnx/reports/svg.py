"""Error-distribution pictures as inline SVG (no plotting dependency, nothing fetched)."""

from __future__ import annotations

from html import escape

from pasa_onnx.comparison import Histogram

COLORS = ("#1f77b4", "#e8710a")  # vs original, vs fp32 reference


def histogram_svg(series: list[tuple[str, Histogram | None]], width: int = 360) -> str:
    """Grouped bars of log10 |error| counts, one colour per series, with a legend."""
    present = [(label, h) for label, h in series if h is not None]
    if not present:
        return "<span class='muted'>no data</span>"
    edges = present[0][1].log10_edges
    nbins = len(edges) - 1
    height, left, bottom, top = 120, 30, 22, 16
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = max(max(h.counts) for _, h in present) or 1
    bar_w = plot_w / nbins / len(present)
    parts = [
        f"<svg class='hist' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
        "role='img' aria-label='error distribution'>",
        f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' "
        "stroke='#888'/>",
    ]
    for s, (label, h) in enumerate(present):
        for i, c in enumerate(h.counts):
            if not c:
                continue
            bh = max(1.0, plot_h * c / peak)
            x = left + (i * len(present) + s) * bar_w
            lo, hi = edges[i], edges[i + 1]
            parts.append(
                f"<rect x='{x:.1f}' y='{top + plot_h - bh:.1f}' width='{max(bar_w - 0.5, 0.5):.1f}'"
                f" height='{bh:.1f}' fill='{COLORS[s % 2]}'><title>{escape(label)}: {c} "
                f"element(s) with 1e{lo:g} &lt;= |err| &lt; 1e{hi:g}</title></rect>"
            )
        extra = f"; exact {h.exact}" + (f"; non-finite {h.nonfinite}" if h.nonfinite else "")
        parts.append(
            f"<text x='{left + 4 + s * 170}' y='11' font-size='10' fill='{COLORS[s % 2]}'>"
            f"{escape(label)}{escape(extra)}</text>"
        )
    for i, e in enumerate(edges):
        if e == int(e) and int(e) % 2 == 0:
            x = left + i * plot_w / nbins
            parts.append(
                f"<text x='{x:.1f}' y='{height - 6}' font-size='9' text-anchor='middle' "
                f"fill='#555'>1e{int(e)}</text>"
            )
    parts.append(f"<text x='2' y='{top + plot_h / 2:.0f}' font-size='9' fill='#555'>n</text></svg>")
    return "".join(parts)
