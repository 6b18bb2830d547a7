"""The lineage graph's pure core (artfs/lineage_graph.py, artfs/lineage_render.py): the walk
against a naive closure on random DAGs, isolation inside the walk, the node cap, hop limits,
one fetch per hop level, and the four renderings."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artfs.errors import InvalidInput
from artfs.lineage_graph import LineageGraph, LineageNode, hops, version_node, walk
from artfs.lineage_render import RENDERERS, render_text, truncation_note

Dag = dict[int, list[int]]  # version -> its inputs (all smaller numbers: acyclic)


def _project(v: int) -> str:
    return "secret" if v % 5 == 4 else "open"


def _node(v: int) -> LineageNode:
    return version_node(_project(v), "a", v, f"d{v}")


@st.composite
def dags(draw: st.DrawFn) -> tuple[Dag, int]:
    n = draw(st.integers(1, 25))
    dag: Dag = {
        v: sorted(set(draw(st.lists(st.integers(0, v - 1), max_size=3)))) if v else []
        for v in range(n)
    }
    return dag, draw(st.integers(0, n - 1))


class Fetcher:
    def __init__(self, dag: Dag) -> None:
        self.dag = dag
        self.calls = 0

    def inputs(self, keys: Sequence[int]) -> Mapping[int, list[tuple[int, LineageNode]]]:
        self.calls += 1
        return {k: [(i, _node(i)) for i in self.dag[k]] for k in keys}

    def consumers(self, keys: Sequence[int]) -> Mapping[int, list[tuple[int, LineageNode]]]:
        self.calls += 1
        return {k: [(c, _node(c)) for c in self.dag if k in self.dag[c]] for k in keys}


def _distances(root: int, step: Mapping[int, list[int]], limit: int | None) -> dict[int, int]:
    """Naive breadth-first distances (the reference the walk is checked against)."""
    dist, level = {root: 0}, [root]
    while level and (limit is None or dist[level[0]] < limit):
        nxt = []
        for v in level:
            for w in step.get(v, []):
                if w not in dist:
                    dist[w] = dist[v] + 1
                    nxt.append(w)
        level = nxt
    return dist


def _graph(dag: Dag, root: int, **kw: object) -> tuple[LineageGraph, Fetcher]:
    f = Fetcher(dag)
    g = walk(root, _node(root), inputs_of=f.inputs, consumers_of=f.consumers, **kw)  # type: ignore[arg-type]
    return g, f


@settings(max_examples=300, deadline=None)
@given(dags(), st.none() | st.integers(0, 4), st.none() | st.integers(0, 4))
def test_walk_matches_a_naive_closure(
    case: tuple[Dag, int], up: int | None, down: int | None
) -> None:
    dag, root = case
    g, f = _graph(dag, root, up=up, down=down)
    consumers: dict[int, list[int]] = {}
    for c, ins in dag.items():
        for i in ins:
            consumers.setdefault(i, []).append(c)
    want_up = _distances(root, dag, up)
    want_down = _distances(root, consumers, down)
    got = {n.number: n.distance for n in g.nodes}
    assert got == {**{v: -d for v, d in want_up.items()}, **want_down}
    assert g.root == _node(root).id and not g.truncated
    ids = {n.id for n in g.nodes}
    assert len(ids) == len(g.nodes)  # each version once, however many paths reach it
    for e in g.edges:
        src, dst = g.node(e.source), g.node(e.target)
        assert src.number in dag[dst.number]  # every edge is a real input
    # one fetch per hop level and direction, never per node
    levels = max(want_up.values()) + max(want_down.values())
    assert f.calls <= levels + 2


@settings(max_examples=200, deadline=None)
@given(dags(), st.none() | st.integers(0, 4))
def test_unreadable_inputs_are_hidden_and_not_walked_past(
    case: tuple[Dag, int], down: int | None
) -> None:
    dag, root = case
    if _project(root) == "secret":
        return  # the caller checks the root's project before walking
    g, _ = _graph(dag, root, up=None, down=down, can_read=lambda p: p == "open")
    for n in g.nodes:
        assert n.hidden or n.project == "open"
        if n.hidden:
            assert (n.project, n.artifact, n.number, n.digest) == ("", "", -1, "")
            assert not any(e.target == n.id for e in g.edges)  # nothing beyond it
            assert sum(e.source == n.id for e in g.edges) == 1  # one hidden node per edge
    # every hidden node stands for exactly one edge into a secret version
    secret_edges = sum(
        _project(i) == "secret"
        for n in g.nodes
        if n.distance <= 0 and not n.hidden
        for i in dag[n.number]
    )
    assert sum(n.hidden for n in g.nodes) == secret_edges


@settings(max_examples=200, deadline=None)
@given(dags(), st.integers(1, 30))
def test_the_node_cap_truncates_and_says_so(case: tuple[Dag, int], cap: int) -> None:
    dag, root = case
    full, _ = _graph(dag, root, up=None, down=None)
    g, _ = _graph(dag, root, up=None, down=None, max_nodes=cap)
    assert len(g.nodes) == min(cap, len(full.nodes))
    assert g.truncated == (len(full.nodes) > cap)
    ids = {n.id for n in g.nodes}
    assert all(e.source in ids and e.target in ids for e in g.edges)
    assert (truncation_note(g) is not None) == g.truncated


def test_a_cycle_ends_the_walk() -> None:
    """Impossible by construction (an input exists before its consumer), guarded anyway."""
    loop: Dag = {0: [2], 1: [0], 2: [1]}
    g, _ = _graph(loop, 0, up=None, down=None)
    assert sorted(n.number for n in g.nodes) == [0, 1, 2]


def test_hop_limits_parse() -> None:
    assert hops(None, "up") is None and hops("all", "up") is None and hops("3", "up") == 3
    for bad in ("-1", "x", "1.5", str(10**9)):
        with pytest.raises(InvalidInput, match="'up'"):
            hops(bad, "up")


@given(dags())
def test_json_round_trips(case: tuple[Dag, int]) -> None:
    dag, root = case
    g, _ = _graph(dag, root, up=None, down=2, can_read=lambda p: p == "open" or root % 5 == 4)
    assert LineageGraph.from_json(json.loads(RENDERERS["json"](g))) == g


def _diamond(depth: int) -> Dag:
    """A chain of diamonds: drawn naively as a tree it would have 2**depth lines."""
    dag: Dag = {0: []}
    for k in range(depth):
        base = 3 * k
        dag[base + 1] = [base]
        dag[base + 2] = [base]
        dag[base + 3] = [base + 1, base + 2]
    return dag


def test_text_tree_is_linear_in_the_edges() -> None:
    dag = _diamond(30)
    g, _ = _graph(dag, max(dag), up=None, down=None)
    text = render_text(g)
    assert len(text.splitlines()) < 2 * len(g.edges) + 10
    assert "(shown above)" in text


def test_renderings_of_a_small_graph() -> None:
    dag: Dag = {0: [], 1: [0], 2: [1, 4], 3: [2], 4: []}  # 4 is in the secret project
    g, _ = _graph(dag, 2, up=None, down=None, can_read=lambda p: p == "open")
    assert render_text(g) == (
        "open/a:v2\n"
        "inputs (all hops):\n"
        "├── open/a:v1\n"
        "│   └── open/a:v0\n"
        "└── (hidden)\n"
        "consumers (all hops):\n"
        "└── open/a:v3\n"
    )
    dot = RENDERERS["dot"](g)
    assert dot.startswith("digraph lineage {") and '"open/a:v1" -> "open/a:v2";' in dot
    assert '"hidden-1" [label="(hidden)", style=dashed' in dot and "secret" not in dot
    mermaid = RENDERERS["mermaid"](g)
    assert mermaid.splitlines()[0] == "flowchart LR"
    assert 'n0["open/a:v2"]:::root' in mermaid and "n1 --> n0" in mermaid
    assert ":::hidden" in mermaid and "secret" not in mermaid
    deleted = LineageGraph(
        g.root,
        tuple(n if n.number != 0 else replace(n, deleted=True) for n in g.nodes),
        g.edges,
        None,
        None,
        False,
        g.max_nodes,
    )
    assert "open/a:v0 (deleted)" in render_text(deleted)
