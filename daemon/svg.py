"""Small server-side SVG: line charts and a lineage graph, as strings, every label escaped.

Pure functions (typed inputs to markup), so the console needs no script and no external asset to draw, and a
test can count the points a chart holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

PALETTE = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037", "#ad1457")
NO_DATA = "no data yet"


@dataclass(frozen=True)
class Series:
    """One line: its name and its (x, y) points; ``dashed`` for a reference such as a threshold."""

    name: str
    points: Sequence[tuple[float, float]]
    dashed: bool = False


@dataclass(frozen=True)
class Box:
    """The drawing area inside a chart (the margins hold the axis labels)."""

    width: int = 560
    height: int = 200
    left: int = 52
    right: int = 12
    top: int = 12
    bottom: int = 28

    def scale(
        self, x: float, y: float, x_range: tuple[float, float], y_range: tuple[float, float]
    ) -> tuple[float, float]:
        """Pixel coordinates of ``(x, y)``: the ranges map onto the inner box (y grows upwards)."""
        x0, x1 = x_range
        y0, y1 = y_range
        inner_w = self.width - self.left - self.right
        inner_h = self.height - self.top - self.bottom
        px = self.left + (inner_w / 2 if x1 == x0 else (x - x0) / (x1 - x0) * inner_w)
        py = self.top + inner_h - (inner_h / 2 if y1 == y0 else (y - y0) / (y1 - y0) * inner_h)
        return round(px, 1), round(py, 1)


def _span(values: Sequence[float], floor: float | None, ceiling: float | None) -> tuple[float, float]:
    low = min(values) if floor is None else min(floor, *values)
    high = max(values) if ceiling is None else max(ceiling, *values)
    return low, high


def _tick(value: float) -> str:
    return f"{value:.3g}"


def _time(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%m-%d %H:%M")


def line_chart(
    title: str,
    series: Sequence[Series],
    box: Box | None = None,
    y_floor: float | None = None,
    y_ceiling: float | None = None,
    time_axis: bool = True,
) -> str:
    """A ``<figure>`` with one polyline (and a circle per point) for each series that has points; without any
    point, the figure says "no data yet". ``y_floor``/``y_ceiling`` widen the y range to include them."""
    box = box or Box()
    drawn = [s for s in series if s.points]
    caption = f"<figcaption>{escape(title)}</figcaption>"
    if not drawn:
        return f'<figure class="chart">{caption}<p class="empty">{NO_DATA}</p></figure>'
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points]
    x_range, y_range = (min(xs), max(xs)), _span(ys, y_floor, y_ceiling)
    parts = [
        f'<svg class="chart" viewBox="0 0 {box.width} {box.height}" width="{box.width}" height="{box.height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<rect x="{box.left}" y="{box.top}" width="{box.width - box.left - box.right}" '
        f'height="{box.height - box.top - box.bottom}" fill="none" stroke="#ccc"/>',
    ]
    label = _time if time_axis else _tick
    for y in (y_range[0], y_range[1]):
        _, py = box.scale(x_range[0], y, x_range, y_range)
        parts.append(f'<text x="{box.left - 4}" y="{py + 4}" text-anchor="end" class="tick">{_tick(y)}</text>')
    for x, anchor in ((x_range[0], "start"), (x_range[1], "end")):
        px, _ = box.scale(x, y_range[0], x_range, y_range)
        parts.append(
            f'<text x="{px}" y="{box.height - 8}" text-anchor="{anchor}" class="tick">{escape(label(x))}</text>'
        )
    for n, s in enumerate(series):
        if not s.points:
            continue
        colour = PALETTE[n % len(PALETTE)]
        pixels = [box.scale(x, y, x_range, y_range) for x, y in s.points]
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        coordinates = " ".join(f"{px},{py}" for px, py in pixels)
        parts.append(
            f'<polyline data-series="{escape(s.name)}" points="{coordinates}" fill="none" stroke="{colour}" '
            f'stroke-width="1.6"{dash}><title>{escape(s.name)}</title></polyline>'
        )
        if not s.dashed:
            parts.extend(
                f'<circle cx="{px}" cy="{py}" r="2.4" fill="{colour}"><title>{escape(s.name)}: '
                f"{_tick(y)} at {escape(label(x))}</title></circle>"
                for (px, py), (x, y) in zip(pixels, s.points, strict=True)
            )
    parts.append("</svg>")
    legend = "".join(_key(PALETTE[n % len(PALETTE)], s) for n, s in enumerate(series) if s.points)
    return f'<figure class="chart">{caption}{"".join(parts)}<div class="legend">{legend}</div></figure>'


def _key(colour: str, s: Series) -> str:
    dash = ' stroke-dasharray="4 2"' if s.dashed else ""
    return (
        f'<span class="key"><svg width="16" height="8"><line x1="0" y1="4" x2="16" y2="4" stroke="{colour}" '
        f'stroke-width="2"{dash}/></svg> {escape(s.name)}</span>'
    )


@dataclass(frozen=True)
class Node:
    """A version in the lineage graph."""

    id: str
    label: str
    href: str
    kind: str = ""  # a CSS class: production, candidate, rejected, archived, approved


@dataclass(frozen=True)
class Edge:
    """Parent → child, with what made the child (lines of text) and a link to its evaluation."""

    parent: str
    child: str
    lines: Sequence[str] = field(default_factory=tuple)
    href: str | None = None


def lineage_graph(nodes: Sequence[Node], edges: Sequence[Edge]) -> str:
    """Versions top to bottom in the given order, indented by their depth below a root; each edge is drawn from
    parent to child, its text beside the child. A version whose parent is not in ``nodes`` is a root."""
    if not nodes:
        return f'<p class="empty">{NO_DATA}</p>'
    row_h, node_w, node_h, indent = 64, 96, 26, 36
    known = {n.id for n in nodes}
    parent_of = {e.child: e.parent for e in edges if e.parent in known}
    depth: dict[str, int] = {}
    for node in nodes:
        seen, current, d = {node.id}, node.id, 0
        while current in parent_of and parent_of[current] not in seen:
            current = parent_of[current]
            seen.add(current)
            d += 1
        depth[node.id] = d
    position = {n.id: (12 + depth[n.id] * indent, 12 + i * row_h) for i, n in enumerate(nodes)}  # top-left of each node
    width = 12 + max(depth.values()) * indent + node_w + 560
    height = 12 + len(nodes) * row_h
    parts = [f'<svg class="lineage" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">']
    by_child = {e.child: e for e in edges if e.parent in known and e.child in known}
    for edge in by_child.values():
        (px, py), (cx, cy) = position[edge.parent], position[edge.child]
        x1, y1, x2, y2 = px + 14, py + node_h, cx + 14, cy
        parts.append(
            f'<path class="edge" data-parent="{escape(edge.parent)}" data-child="{escape(edge.child)}" '
            f'd="M{x1},{y1} L{x1},{y2 - 8} L{x2},{y2 - 8} L{x2},{y2}" fill="none" stroke="#777"/>'
        )
    for node in nodes:
        x, y = position[node.id]
        parts.append(
            f'<a href="{escape(node.href)}"><rect class="node {escape(node.kind)}" x="{x}" y="{y}" rx="5" '
            f'width="{node_w}" height="{node_h}"/><text x="{x + 8}" y="{y + 17}" class="node-label">'
            f"{escape(node.label)}</text></a>"
        )
        found = by_child.get(node.id)
        if found is not None:
            text_x = x + node_w + 10
            for k, line in enumerate(found.lines[:3]):
                parts.append(f'<text x="{text_x}" y="{y + 11 + k * 13}" class="edge-label">{escape(line)}</text>')
            if found.href:
                parts.append(
                    f'<a href="{escape(found.href)}" class="evaluation"><text x="{text_x}" '
                    f'y="{y + 11 + min(3, len(found.lines)) * 13}" class="edge-link">evaluation</text></a>'
                )
    parts.append("</svg>")
    return "".join(parts)
