"""Rendering a lineage graph (pure): a text tree, JSON, Graphviz dot, Mermaid.

The text form is two trees from the root, inputs then consumers. A DAG drawn as a tree
repeats shared ancestry, which grows exponentially with depth (a diamond per hop doubles
it); a node already drawn is therefore printed once more as ``(shown above)`` without its
subtree, so the output is linear in the graph's edges. Runs are labelled ``run p/name
(id, status)`` and drawn as ellipses (dot) or stadiums (Mermaid). The trees are walked with an
explicit stack, as a chain may be thousands of hops deep.
"""

from __future__ import annotations

import json
from collections import defaultdict

from .lineage_graph import RUN, LineageGraph, LineageNode

FORMATS = ("text", "json", "dot", "mermaid")


def truncation_note(graph: LineageGraph) -> str | None:
    if not graph.truncated:
        return None
    return (
        f"lineage of {graph.root} stopped at {graph.max_nodes} nodes: "
        "ask for fewer hops with --up N / --down N"
    )


def _label(node: LineageNode) -> str:
    return node.label + (" (deleted)" if node.deleted else "")


def _hops(limit: int | None) -> str:
    return "all hops" if limit is None else f"{limit} hop{'s' if limit != 1 else ''}"


def _tree(graph: LineageGraph, children: dict[str, list[str]]) -> list[str]:
    nodes = {n.id: n for n in graph.nodes}
    lines: list[str] = []
    drawn: set[str] = {graph.root}
    stack = [
        (c, "", i == len(children[graph.root]) - 1) for i, c in enumerate(children[graph.root])
    ]
    stack.reverse()
    while stack:
        node_id, prefix, last = stack.pop()
        branch = "└── " if last else "├── "
        kids = children.get(node_id, [])
        if node_id in drawn and kids:
            lines.append(f"{prefix}{branch}{_label(nodes[node_id])} (shown above)")
            continue
        drawn.add(node_id)
        lines.append(f"{prefix}{branch}{_label(nodes[node_id])}")
        inner = prefix + ("    " if last else "│   ")
        stack.extend((c, inner, i == len(kids) - 1) for i, c in reversed(list(enumerate(kids))))
    return lines


def render_text(graph: LineageGraph) -> str:
    nodes = {n.id: n for n in graph.nodes}
    inputs: dict[str, list[str]] = defaultdict(list)
    consumers: dict[str, list[str]] = defaultdict(list)
    for e in graph.edges:
        if nodes[e.target].distance <= 0 and nodes[e.source].distance < 0:
            inputs[e.target].append(e.source)
        if nodes[e.source].distance >= 0 and nodes[e.target].distance > 0:
            consumers[e.source].append(e.target)
    root = _label(nodes[graph.root])
    out = [root, f"inputs ({_hops(graph.up)}):"]
    out += _tree(graph, inputs) or ["  (none)"]
    out += [f"consumers ({_hops(graph.down)}):"]
    out += _tree(graph, consumers) or ["  (none)"]
    note = truncation_note(graph)
    if note:
        out.append(f"... {note}")
    return "\n".join(out) + "\n"


def render_json(graph: LineageGraph) -> str:
    return json.dumps(graph.to_json(), indent=2, ensure_ascii=False) + "\n"


def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(graph: LineageGraph) -> str:
    out = ["digraph lineage {", "  rankdir=LR;", "  node [shape=box];"]
    for n in graph.nodes:
        attrs = [f"label={_dot_str(_label(n))}"]
        if n.kind == RUN:
            attrs.append("shape=ellipse")  # runs are the graph's verbs, versions its nouns
        if n.hidden:
            attrs += ["style=dashed", "color=gray", "fontcolor=gray"]
        elif n.deleted:
            attrs.append("style=dashed")
        if n.id == graph.root:
            attrs.append("penwidth=2")
        out.append(f"  {_dot_str(n.id)} [{', '.join(attrs)}];")
    for e in graph.edges:
        out.append(f"  {_dot_str(e.source)} -> {_dot_str(e.target)};")
    out.append("}")
    return "\n".join(out) + "\n"


def _mermaid_str(text: str) -> str:
    return '"' + text.replace('"', "#quot;") + '"'


def render_mermaid(graph: LineageGraph) -> str:
    """Node ids become ``n0``, ``n1``...: a ref's ``/`` and ``:`` are not Mermaid ids."""
    ids = {n.id: f"n{i}" for i, n in enumerate(graph.nodes)}
    out = ["flowchart LR"]
    for n in graph.nodes:
        cls = ":::hidden" if n.hidden else ":::deleted" if n.deleted else ""
        if n.id == graph.root:
            cls = ":::root"
        left, right = ("([", "])") if n.kind == RUN else ("[", "]")  # a run: a stadium
        out.append(f"  {ids[n.id]}{left}{_mermaid_str(_label(n))}{right}{cls}")
    out += [f"  {ids[e.source]} --> {ids[e.target]}" for e in graph.edges]
    out += [
        "  classDef root stroke-width:3px;",
        "  classDef hidden stroke-dasharray:5 5,color:#888;",
        "  classDef deleted stroke-dasharray:5 5;",
    ]
    return "\n".join(out) + "\n"


RENDERERS = {
    "text": render_text,
    "json": render_json,
    "dot": render_dot,
    "mermaid": render_mermaid,
}
