"""A layered drawing of a directed graph, as SVG (pure: no I/O, no Graphviz).

Generic over nodes and edges: a node has an id, a label, a ``kind`` and an optional
link; how a kind looks is one entry of ``STYLES`` (a version is a box, a run an oval), so
a new kind of node needs a style and nothing else. Edges point from inputs to what was
made from them, and the drawing reads left to right:

1. layers: the longest path from a source (Kahn's topological order), so every edge
   points rightwards; nodes left on a cycle (none in a lineage graph) go last;
2. order within a layer: a few sweeps of the barycenter heuristic (each node moves to
   the mean position of its neighbours in the layers already placed), which removes
   most crossings in the small graphs a page shows;
3. coordinates on a grid, edges as cubic curves from a node's right side to the next's
   left side, with an arrowhead.

Linear in nodes plus edges per sweep; the page caps the nodes it draws (``routes.py``).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

NODE_W = 220
NODE_H = 34
GAP_X = 70
GAP_Y = 16
MARGIN = 12
LABEL_CHARS = 30  # longer labels are cut; the full one is the node's tooltip
SWEEPS = 4


@dataclass(frozen=True, slots=True)
class Style:
    shape: str  # "rect" or "oval"
    fill: str
    stroke: str
    text: str = "#111"


STYLES = {
    "version": Style("rect", "#eef4ff", "#3869c9"),
    "run": Style("oval", "#fff4e0", "#c98a1c"),
}
DEFAULT_STYLE = Style("rect", "#f2f2f2", "#777")


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    label: str
    kind: str = "version"
    href: str | None = None
    root: bool = False
    muted: bool = False  # hidden or deleted: dashed
    title: str = ""  # the tooltip (default: the label)


@dataclass(frozen=True, slots=True)
class Placed:
    node: Node
    layer: int
    x: int
    y: int


def layers(nodes: Sequence[Node], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layering: a node's layer is one more than its deepest input's."""
    ids = {n.id for n in nodes}
    succ: dict[str, list[str]] = defaultdict(list)
    indeg = dict.fromkeys(ids, 0)
    for s, t in edges:
        if s in ids and t in ids and s != t:
            succ[s].append(t)
            indeg[t] += 1
    layer = dict.fromkeys(ids, 0)
    queue = deque(n.id for n in nodes if indeg[n.id] == 0)
    done = 0
    while queue:
        u = queue.popleft()
        done += 1
        for v in succ[u]:
            layer[v] = max(layer[v], layer[u] + 1)
            indeg[v] -= 1
            if indeg[v] == 0:
                queue.append(v)
    if done < len(ids):  # a cycle: its nodes after everything else
        last = max(layer.values(), default=0) + 1
        for n in nodes:
            if indeg[n.id] > 0:
                layer[n.id] = last
    return layer


def order(
    nodes: Sequence[Node], edges: Sequence[tuple[str, str]], layer: dict[str, int]
) -> list[list[str]]:
    """Nodes of each layer, top to bottom, after barycenter sweeps."""
    columns: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for n in nodes:
        columns[layer[n.id]].append(n.id)
    preds: dict[str, list[str]] = defaultdict(list)
    succs: dict[str, list[str]] = defaultdict(list)
    for s, t in edges:
        if s in layer and t in layer and s != t:
            preds[t].append(s)
            succs[s].append(t)
    for sweep in range(SWEEPS):
        forward = sweep % 2 == 0
        pos = {nid: i for col in columns for i, nid in enumerate(col)}
        near = preds if forward else succs
        seq = range(1, len(columns)) if forward else range(len(columns) - 2, -1, -1)
        for c in seq:
            columns[c].sort(key=lambda nid: _center(nid, near, pos))
            for i, nid in enumerate(columns[c]):
                pos[nid] = i
    return columns


def _center(nid: str, near: dict[str, list[str]], pos: dict[str, int]) -> float:
    ns = near.get(nid)
    return sum(pos[m] for m in ns) / len(ns) if ns else float(pos[nid])


def place(nodes: Sequence[Node], edges: Sequence[tuple[str, str]]) -> dict[str, Placed]:
    layer = layers(nodes, edges)
    columns = order(nodes, edges, layer)
    by_id = {n.id: n for n in nodes}
    tallest = max((len(c) for c in columns), default=0)
    placed: dict[str, Placed] = {}
    for c, col in enumerate(columns):
        top = (tallest - len(col)) * (NODE_H + GAP_Y) // 2
        for i, nid in enumerate(col):
            x = MARGIN + c * (NODE_W + GAP_X)
            y = MARGIN + top + i * (NODE_H + GAP_Y)
            placed[nid] = Placed(by_id[nid], c, x, y)
    return placed


def _cut(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _shape(p: Placed, style: Style) -> str:
    dash = ' stroke-dasharray="5 4"' if p.node.muted else ""
    width = 3 if p.node.root else 1.5
    paint = f'fill="{style.fill}" stroke="{style.stroke}" stroke-width="{width}"{dash}'
    if style.shape == "oval":
        return (
            f'<ellipse cx="{p.x + NODE_W // 2}" cy="{p.y + NODE_H // 2}" '
            f'rx="{NODE_W // 2}" ry="{NODE_H // 2}" {paint}/>'
        )
    return f'<rect x="{p.x}" y="{p.y}" width="{NODE_W}" height="{NODE_H}" rx="5" {paint}/>'


def render_svg(nodes: Sequence[Node], edges: Sequence[tuple[str, str]]) -> Markup:
    """The graph as one ``<svg>`` element, safe to embed in HTML (labels are escaped)."""
    placed = place(nodes, edges)
    width = max((p.x for p in placed.values()), default=0) + NODE_W + MARGIN
    height = max((p.y for p in placed.values()), default=0) + NODE_H + MARGIN
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker>'
        "</defs>",
    ]
    for s, t in edges:
        a, b = placed.get(s), placed.get(t)
        if a is None or b is None:
            continue
        x1, y1 = a.x + NODE_W, a.y + NODE_H // 2
        x2, y2 = b.x, b.y + NODE_H // 2
        bend = max(20, (x2 - x1) // 2)
        out.append(
            f'<path class="edge" d="M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}" '
            'fill="none" stroke="#666" stroke-width="1.3" marker-end="url(#arrow)"/>'
        )
    for p in placed.values():
        n = p.node
        style = STYLES.get(n.kind, DEFAULT_STYLE)
        body = (
            f'<g class="node kind-{escape(n.kind)}{" root" if n.root else ""}" '
            f'data-id="{escape(n.id)}"><title>{escape(n.title or n.label)}</title>'
            f"{_shape(p, style)}"
            f'<text x="{p.x + NODE_W // 2}" y="{p.y + NODE_H // 2 + 5}" text-anchor="middle" '
            f'font-size="13" fill="{style.text}">{escape(_cut(n.label))}</text></g>'
        )
        if n.href:
            body = f'<a href="{escape(n.href)}">{body}</a>'
        out.append(body)
    out.append("</svg>")
    return Markup("".join(out))
