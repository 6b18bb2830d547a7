"""The lineage graph around one version: its model and the walk that builds it (pure).

A version's lineage inputs are stored one hop at a time (``version_inputs``); the graph
is their transitive closure in both directions from one root: *up* through inputs,
*down* through consumers. The walk here is generic over two batch fetchers, one call per
hop level (the SQL store answers each with one query per ~400 nodes; the in-memory twin
with dict lookups), so no store recurses on a user-controlled depth.

Isolation (docs/api.md, "Isolation model") is applied *during* the walk, not after it: an
input in a project the reader may not read becomes a hidden node (one per edge: two
hidden nodes are never merged, as merging would tell that two edges reach the same
version) and is not walked past; a consumer in such a project is left out, as
``used-by`` leaves it out.

Runs are nodes too (``kind`` "run"): a version a run used is its input (version -> run),
a version it logged its consumer (run -> version). A run is one hop, like a version, and
belongs to its project for isolation. A version logged by a run usually also lists the
run's inputs as its own, so both paths show: the recorded facts, not a choice among them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from .errors import InvalidInput, ProtocolError
from .runs import RunInfo

MAX_LINEAGE_NODES = 10_000  # nodes one graph holds at most (docs/decisions.md)
MAX_HOPS = 1_000_000  # larger --up/--down values are refused, not silently clipped

VERSION, RUN = "version", "run"  # node kinds

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class LineageNode:
    """One node. ``distance``: hops from the root, negative upstream (inputs), positive
    downstream (consumers), 0 for the root. A hidden node has no names, number or digest."""

    id: str
    kind: str = VERSION
    project: str = ""
    artifact: str = ""
    number: int = -1
    digest: str = ""
    deleted: bool = False
    hidden: bool = False
    distance: int = 0
    name: str = ""  # a run's display name and status (versions: "")
    status: str = ""

    @property
    def label(self) -> str:
        if self.hidden:
            return "(hidden run)" if self.kind == RUN else "(hidden)"
        if self.kind == RUN:
            return f"run {self.project}/{self.name} ({self.id.removeprefix('run:')}, {self.status})"
        return f"{self.project}/{self.artifact}:v{self.number}"

    def to_json(self) -> dict[str, Any]:
        if self.hidden:
            return {"id": self.id, "kind": self.kind, "hidden": True, "distance": self.distance}
        if self.kind == RUN:
            return {
                "id": self.id,
                "kind": self.kind,
                "project": self.project,
                "name": self.name,
                "status": self.status,
                "distance": self.distance,
            }
        return {
            "id": self.id,
            "kind": self.kind,
            "project": self.project,
            "artifact": self.artifact,
            "number": self.number,
            "digest": self.digest,
            "deleted": self.deleted,
            "distance": self.distance,
        }

    @classmethod
    def from_json(cls, d: Any) -> LineageNode:
        try:
            if d.get("hidden"):
                return cls(str(d["id"]), str(d["kind"]), hidden=True, distance=int(d["distance"]))
            if d["kind"] == RUN:
                return cls(
                    str(d["id"]),
                    RUN,
                    str(d["project"]),
                    distance=int(d["distance"]),
                    name=str(d["name"]),
                    status=str(d["status"]),
                )
            return cls(
                str(d["id"]),
                str(d["kind"]),
                str(d["project"]),
                str(d["artifact"]),
                int(d["number"]),
                str(d["digest"]),
                bool(d["deleted"]),
                False,
                int(d["distance"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProtocolError(f"malformed lineage node: {e}") from None


def version_node(
    project: str, artifact: str, number: int, digest: str, deleted: bool = False
) -> LineageNode:
    return LineageNode(
        f"{project}/{artifact}:v{number}", VERSION, project, artifact, number, digest, deleted
    )


def run_node(run: RunInfo) -> LineageNode:
    """A run as a node: id ``run:<run id>`` (a version's id always holds a ``/``)."""
    return LineageNode(f"run:{run.id}", RUN, run.project, name=run.name, status=run.status)


@dataclass(frozen=True, slots=True)
class LineageEdge:
    """``source`` is a lineage input of ``target`` (edges point from inputs to consumers)."""

    source: str
    target: str


@dataclass(frozen=True, slots=True)
class LineageGraph:
    """The subgraph around ``root``; ``up``/``down``: the hop limits asked (None: all);
    ``truncated``: the walk stopped at ``max_nodes`` before it was complete."""

    root: str
    nodes: tuple[LineageNode, ...]
    edges: tuple[LineageEdge, ...]
    up: int | None
    down: int | None
    truncated: bool
    max_nodes: int

    def node(self, node_id: str) -> LineageNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "up": self.up,
            "down": self.down,
            "truncated": self.truncated,
            "max_nodes": self.max_nodes,
            "nodes": [n.to_json() for n in self.nodes],
            "edges": [[e.source, e.target] for e in self.edges],
        }

    @classmethod
    def from_json(cls, d: Any) -> LineageGraph:
        try:
            up, down = d["up"], d["down"]
            return cls(
                str(d["root"]),
                tuple(LineageNode.from_json(n) for n in d["nodes"]),
                tuple(LineageEdge(str(s), str(t)) for s, t in d["edges"]),
                None if up is None else int(up),
                None if down is None else int(down),
                bool(d["truncated"]),
                int(d["max_nodes"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProtocolError(f"malformed lineage graph: {e}") from None


def hops(value: Any, name: str) -> int | None:
    """A hop limit from a query string or a CLI flag: a count >= 0, or None (all)."""
    if value is None or value == "" or value == "all":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"'{name}' must be a number of hops >= 0 or 'all'") from None
    if not 0 <= n <= MAX_HOPS:
        raise InvalidInput(f"'{name}' must be between 0 and {MAX_HOPS} hops (or 'all')")
    return n


Fetch = Callable[[Sequence[K]], Mapping[K, Sequence[tuple[K, LineageNode]]]]
"""A batch of node keys -> for each, its neighbours (key, node) in one direction, in the
order they are shown (inputs by position; consumers by name and number)."""


@dataclass(slots=True)
class _Walk(Generic[K]):
    can_read: Callable[[str], bool]
    max_nodes: int
    nodes: dict[str, LineageNode]
    edges: list[LineageEdge]
    seen: dict[K, str]
    hidden: int = 0
    truncated: bool = False

    def add(self, node: LineageNode) -> bool:
        if len(self.nodes) >= self.max_nodes:
            self.truncated = True
            return False
        self.nodes[node.id] = node
        return True

    def side(self, start: K, root_id: str, limit: int | None, fetch: Fetch[K], sign: int) -> None:
        """Breadth-first from ``start``, one ``fetch`` per hop level; ``sign`` -1: up."""
        frontier: list[tuple[K, str]] = [(start, root_id)]
        depth = 0
        while frontier and (limit is None or depth < limit) and not self.truncated:
            depth += 1
            found = fetch([k for k, _ in frontier])
            nxt: list[tuple[K, str]] = []
            for key, here in frontier:
                for nkey, node in found.get(key, ()):
                    if not self.can_read(node.project):
                        if sign > 0:
                            continue  # a consumer the reader may not see: left out
                        self.hidden += 1
                        hid = LineageNode(f"hidden-{self.hidden}", node.kind, hidden=True)
                        if not self.add(replace(hid, distance=-depth)):
                            return
                        self.edges.append(LineageEdge(hid.id, here))
                        continue
                    if nkey not in self.seen:
                        if not self.add(replace(node, distance=sign * depth)):
                            return
                        self.seen[nkey] = node.id
                        nxt.append((nkey, node.id))
                    there = self.seen[nkey]
                    edge = LineageEdge(there, here) if sign < 0 else LineageEdge(here, there)
                    self.edges.append(edge)
            frontier = nxt


def walk(
    root_key: K,
    root: LineageNode,
    *,
    up: int | None,
    down: int | None,
    inputs_of: Fetch[K],
    consumers_of: Fetch[K],
    can_read: Callable[[str], bool] = lambda _project: True,
    max_nodes: int = MAX_LINEAGE_NODES,
) -> LineageGraph:
    """The lineage graph of ``root`` (whose project the caller has already checked).

    Up first, then down, each breadth-first with a visited set, so a node is fetched once
    however many paths reach it, and a cycle (impossible by construction: an input exists
    before its consumer is committed) would end the walk rather than loop it."""
    if max_nodes < 1:
        raise InvalidInput("max_nodes must be at least 1")
    w: _Walk[K] = _Walk(can_read, max_nodes, {}, [], {root_key: root.id})
    w.add(replace(root, distance=0))
    w.side(root_key, root.id, up, inputs_of, -1)
    w.side(root_key, root.id, down, consumers_of, 1)
    edges = tuple(dict.fromkeys(w.edges))  # one edge per pair, first-seen order
    return LineageGraph(root.id, tuple(w.nodes.values()), edges, up, down, w.truncated, max_nodes)
