"""The registry web page (/ui/) over plain HTTP: a real server, both configurations, with
tokens required; plus the pure parts (directory listing, comparison, layered layout).
The browser tests are tests/test_ui_browser.py."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from artfs.errors import InvalidInput, NotFound
from artfs.lineage_graph import LineageEdge, LineageGraph, version_node
from artfs.server.ui import layout, views
from artfs.server.ui.routes import (
    MAX_DRAWN,
    decode_files,
    drawn_nodes,
    graph_edges,
    manifest_cache,
)

from .backends import backend_params
from .conftest_server import RunningServer
from .ui_helpers import MANY, WIDE, UiRegistry, ui_registry


@pytest.fixture(scope="module", params=backend_params())
def ui(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UiRegistry]:
    yield from ui_registry(request.param, tmp_path_factory.mktemp("ui"), "--auth", "on")


# --------------------------------------------------------------------------- pure parts


def rows(paths: dict[str, int]) -> list[list[object]]:
    return [
        [p, s, hashlib.sha256(f"{p}{s}".encode()).hexdigest()] for p, s in sorted(paths.items())
    ]


def test_list_dir_aggregates_subdirectories_and_pages() -> None:
    files = rows({"a.txt": 1, "d/x": 2, "d/y/z": 3, "d.txt": 4, "e/q": 5, "d0": 6})
    top = views.list_dir(files, "", 1)
    assert [(e.name, e.is_dir, e.size, e.files) for e in top.entries] == [
        ("d", True, 5, 2),
        ("e", True, 5, 1),
        ("a.txt", False, 1, 1),
        ("d.txt", False, 4, 1),
        ("d0", False, 6, 1),
    ]
    assert (top.files, top.size) == (6, 21)
    d = views.list_dir(files, "d/", 1)  # "d.txt" and "d0" sort around "d/": not in it
    assert [(e.path, e.is_dir) for e in d.entries] == [("d/y", True), ("d/x", False)]
    with pytest.raises(NotFound, match="no directory 'nope'"):
        views.list_dir(files, "nope", 1)
    many = rows({f"f{i:05d}": i for i in range(views.PAGE_FILES * 2 + 3)})
    last = views.list_dir(many, "", 3)
    assert [e.name for e in last.entries] == ["f01000", "f01001", "f01002"]
    assert last.pager.pages == 3
    with pytest.raises(NotFound, match="page 4 of 3"):
        views.list_dir(many, "", 4)
    with pytest.raises(InvalidInput, match="'page' must be"):
        views.page_param("0")


def test_compare_by_digest_with_sizes_and_pages() -> None:
    a = rows({"keep": 1, "gone": 2, "edit": 3})
    b = rows({"keep": 1, "new": 7, "edit": 4})
    c = views.classify(a, b)
    diff = views.compare(c, "changed", 1)
    assert diff.counts == {"changed": 1, "added": 1, "removed": 1} and diff.same == 1
    assert diff.sizes == {"changed": 4, "added": 7, "removed": 2}
    assert [(r.path, r.size_a, r.size_b) for r in diff.rows] == [("edit", 3, 4)]
    assert [r.path for r in views.compare(c, "added", 1).rows] == ["new"]
    assert [(r.path, r.size_b) for r in views.compare(c, "removed", 1).rows] == [("gone", None)]
    big = views.classify([], rows({f"f{i:05d}": 1 for i in range(views.PAGE_DIFF + 1)}))
    assert [r.path for r in views.compare(big, "added", 2).rows] == [f"f{views.PAGE_DIFF:05d}"]
    with pytest.raises(InvalidInput, match="'show' must be one of"):
        views.compare(c, "everything", 1)


def test_metadata_side_by_side_marks_differences() -> None:
    meta, more = views.metadata_side_by_side({"a": 1, "b": "x"}, {"b": "x", "c": [1]})
    assert [(m.key, m.a, m.b, m.differs) for m in meta] == [
        ("a", "1", None, True),
        ("b", "x", "x", False),
        ("c", None, "[1]", True),
    ]
    assert more == 0
    assert views.meta_text("y" * 1000).endswith("…") and len(views.meta_text("y" * 1000)) == 300


def test_kept_values_are_bounded_by_rows() -> None:
    cache = manifest_cache(max_rows=3)
    loads: list[str] = []

    def loader(n: int, name: str) -> Callable[[], list[list[Any]]]:
        def load() -> list[list[Any]]:
            loads.append(name)
            data = json.dumps({"files": rows({f"{name}{i}": i for i in range(n)})}).encode()
            return decode_files(gzip.compress(data))

        return load

    assert len(cache.get("a", loader(2, "a"))) == 2
    cache.get("a", loader(2, "a"))
    assert loads == ["a"]
    cache.get("b", loader(2, "b"))  # 4 rows > 3: "a" (least recently used) goes
    cache.get("a", loader(2, "a"))
    assert loads == ["a", "b", "a"]
    cache.get("huge", loader(5, "huge"))  # larger than the whole cache: served, not kept
    cache.get("huge", loader(5, "huge"))
    assert loads.count("huge") == 2


def test_layout_layers_point_right_and_order_reduces_crossings() -> None:
    nodes = [layout.Node(n, n) for n in ("a", "b", "x", "y", "m", "r")]
    edges = [("a", "x"), ("b", "y"), ("x", "m"), ("y", "m"), ("a", "m"), ("m", "r")]
    lay = layout.layers(nodes, edges)
    assert lay == {"a": 0, "b": 0, "x": 1, "y": 1, "m": 2, "r": 3}
    assert all(lay[s] < lay[t] for s, t in edges)
    # crossing inputs: b->x, a->y with a above b: the sweep puts y above x
    cross = [layout.Node(n, n) for n in ("a", "b", "x", "y")]
    cols = layout.order(
        cross, [("a", "y"), ("b", "x")], layout.layers(cross, [("a", "y"), ("b", "x")])
    )
    assert cols == [["a", "b"], ["y", "x"]]
    # a cycle (not a lineage graph) still lays out
    assert set(layout.layers(cross, [("a", "b"), ("b", "a")]).values()) <= {0, 1}


def test_lineage_page_draws_the_nodes_nearest_the_root() -> None:
    nodes = [version_node("p", "a", 0, "d")]
    nodes += [replace(version_node("p", "up", i, "d"), distance=-1 - i // 10) for i in range(200)]
    nodes += [replace(version_node("p", "dn", i, "d"), distance=1 + i // 10) for i in range(200)]
    edges = tuple(LineageEdge(n.id, nodes[0].id) for n in nodes[1:])
    graph = LineageGraph(nodes[0].id, tuple(nodes), edges, None, None, False, 10_000)
    shown = drawn_nodes(graph)
    assert len(shown) == MAX_DRAWN and shown[0].id == "p/a:v0"
    assert max(abs(n.distance) for n in shown) == 15  # 1 + 2 x 10 per distance, up to 15
    assert len(graph_edges(graph, shown)) == MAX_DRAWN - 1


def test_svg_escapes_links_kinds_and_styles() -> None:
    nodes = [
        layout.Node("p/a:v1", "p/a:v1 <script>", href="/ui/p/p/a/v1?x=1&y=2", root=True),
        layout.Node("run-7", "train run 7", kind="run"),
        layout.Node("hidden-1", "(hidden)", muted=True),
        layout.Node("weird", "w", kind="some-future-kind"),
    ]
    svg = str(layout.render_svg(nodes, [("run-7", "p/a:v1"), ("hidden-1", "p/a:v1")]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert 'href="/ui/p/p/a/v1?x=1&amp;y=2"' in svg
    assert svg.count("<ellipse") == 1 and svg.count("<rect") == 3  # a run is an oval
    assert svg.count('class="edge"') == 2 and 'stroke-dasharray="5 4"' in svg
    assert 'class="node kind-version root"' in svg


# --------------------------------------------------------------------------- over HTTP


def test_no_token_gets_the_login_prompt_and_a_bad_one_an_error(ui: UiRegistry) -> None:
    for path in ("/ui/", "/ui/p/vision", "/ui/p/vision/data/v1", "/ui/p/vision/data/v1/lineage"):
        r = ui.get(path)
        assert r.status_code == 401 and 'name="token"' in r.text, path
        assert "vision/data" not in r.text.replace(f'value="{path}"', "")
    r = ui.get("/ui/", token="artfs_not-a-token")
    assert r.status_code == 401 and "unknown token" in r.text
    assert "artfs_ui_token=" in r.headers["set-cookie"]  # the bad cookie is dropped
    # The JSON API is untouched by the page: still 401 JSON.
    assert httpx.get(f"{ui.url}/v1/projects").json()["error"]["code"] == "unauthorized"


def test_login_sets_a_session_cookie_and_returns_to_the_page(ui: UiRegistry) -> None:
    with httpx.Client(base_url=ui.url) as c:
        bad = c.post("/ui/login", data={"token": "artfs_wrong", "next": "/ui/p/vision"})
        assert bad.status_code == 401 and "unknown token" in bad.text
        r = c.post("/ui/login", data={"token": ui.reader, "next": "/ui/p/vision"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/p/vision"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
        assert "max-age" not in cookie and "expires" not in cookie  # the browser session only
        assert c.get("/ui/p/vision").status_code == 200
        off = c.post("/ui/login", data={"token": ui.reader, "next": "https://evil.example/"})
        assert off.headers["location"] == "/ui/"  # never a redirect off the registry
        form = c.get("/ui/login")
        assert form.status_code == 200 and 'name="next" value="/ui/"' in form.text
        out = c.post("/ui/logout")
        assert out.status_code == 303
        assert c.get("/ui/p/vision").status_code == 401


def test_a_token_sees_only_its_projects(ui: UiRegistry) -> None:
    home = ui.get("/ui/", ui.reader)
    assert home.status_code == 200
    assert 'href="/ui/p/vision"' in home.text and "nlp" not in home.text
    assert 'href="/ui/p/nlp"' in ui.get("/ui/", ui.admin).text
    for path in (
        "/ui/p/nlp",
        "/ui/p/nlp/corpus",
        "/ui/p/nlp/corpus/v0",
        "/ui/p/nlp/corpus/v0/lineage",
        "/ui/p/nlp/corpus/compare?a=0&b=0",
    ):
        r = ui.get(path, ui.reader)
        assert r.status_code == 403 and "no read right on project &#39;nlp&#39;" in r.text, path
        assert "secret-corpus" not in r.text
    # The model's lineage names the corpus as an input: hidden from the reader.
    for path in ("/ui/p/vision/model/v0", "/ui/p/vision/model/v0/lineage?up=all&down=all"):
        text = ui.get(path, ui.reader).text
        assert "(hidden)" in text and "corpus" not in text and "nlp" not in text, path
    assert "nlp/corpus:v0" in ui.get("/ui/p/vision/model/v0/lineage", ui.admin).text


def test_downloads_redirect_to_the_signed_urls_of_locate(ui: UiRegistry) -> None:
    vision_sha = hashlib.sha256(b"alpha two\n").hexdigest()
    nlp_sha = hashlib.sha256(b"nlp only\n").hexdigest()
    page = ui.get("/ui/p/vision/data/v1", ui.reader).text
    assert f'href="/ui/blob/{vision_sha}"' in page
    r = ui.get(f"/ui/blob/{vision_sha}", ui.reader)
    assert r.status_code == 307
    where = r.headers["location"]
    if ui.server.blob_port is not None:
        assert re.search(rf"/blobs/{vision_sha}\?expires=\d+&sig=[0-9a-f]{{64}}$", where)
    assert httpx.get(where).content == b"alpha two\n"
    # A blob only a project the token can't read holds: as if absent.
    assert ui.get(f"/ui/blob/{nlp_sha}", ui.reader).status_code == 404
    assert ui.get(f"/ui/blob/{nlp_sha}", ui.admin).status_code == 307
    assert ui.get(f"/ui/blob/{vision_sha}").status_code == 401


def test_version_pages_show_what_the_registry_holds(ui: UiRegistry) -> None:
    reg = ui.open()
    try:
        info = reg.get_version("vision", "data", "v1")
        manifest = reg.get_manifest("vision", "data", 1)
    finally:
        reg.close()
    versions = ui.get("/ui/p/vision/data", ui.reader).text
    assert re.search(r'data-version="1">.*?<span class="alias">best</span>', versions, re.S)
    assert "ana" in versions and "&#34;source&#34;: &#34;cam&#34;" in versions
    page = ui.get("/ui/p/vision/data/v1", ui.reader).text
    assert info.digest in page and views.iso(info.created) in page
    for path, entry in manifest.items():
        if "/" not in path:
            assert entry.sha256 in page and f">{path}</a>" in page
    assert 'href="/ui/p/vision/data/v1?dir=sub"' not in page  # v1 has no sub/
    assert "artfs get vision/data:v1 ./data" in page
    assert "artfs.Registry(&#39;" in page and ".version(&#39;vision/data:v1&#39;)" in page
    sub = ui.get("/ui/p/vision/data/v0?dir=sub", ui.reader)
    assert sub.status_code == 200 and ">b.txt</a>" in sub.text and ">a.txt</a>" not in sub.text
    arts = ui.get("/ui/p/vision", ui.reader).text
    assert re.search(r">data</a></td>\s*<td>dataset</td>\s*<td><a class=\"latest\"[^>]*>v1<", arts)


def test_compare_page(ui: UiRegistry) -> None:
    r = ui.get("/ui/p/vision/data/compare?a=0&b=1", ui.reader)
    assert r.status_code == 200
    assert "1 changed (10 B), 1 added (8 B), 1 removed (6 B), 1 the same" in r.text
    assert re.search(r'<tr class="differs"><td>rows</td>\s*<td><code>2</code>', r.text)
    added = ui.get("/ui/p/vision/data/compare?a=v0&b=v1&show=added", ui.reader).text
    assert '<td class="path">c.txt</td>' in added and "sub/b.txt" not in added
    bad = ui.get("/ui/p/vision/data/compare?a=zero&b=1", ui.reader)
    assert bad.status_code == 400 and "&#39;a&#39; must be a version number" in bad.text
    assert ui.get("/ui/p/vision/data/compare?a=0&b=9", ui.reader).status_code == 404


def test_pagination_keeps_pages_small(ui: UiRegistry) -> None:
    first = ui.get("/ui/p/vision/many", ui.reader).text
    shown = re.findall(r'data-version="(\d+)"', first)
    assert shown == [str(n) for n in range(MANY - 1, MANY - 1 - views.PAGE_VERSIONS, -1)]
    assert f"page 1 of {-(-MANY // views.PAGE_VERSIONS)}" in first
    last = ui.get("/ui/p/vision/many?page=3", ui.reader).text
    assert re.findall(r'data-version="(\d+)"', last)[-1] == "0"
    assert ui.get("/ui/p/vision/many?page=4", ui.reader).status_code == 404
    top = ui.get("/ui/p/vision/wide/v0", ui.reader).text
    assert f"{WIDE} files" in top and ">top.txt</a>" in top
    pages = [ui.get(f"/ui/p/vision/wide/v0?dir=dir&page={p}", ui.reader).text for p in (1, 2, 3)]
    names = [n for t in pages for n in re.findall(r'download="(f\d+\.txt)"', t)]
    assert names == [f"f{i:04d}.txt" for i in range(WIDE)]
    assert ui.get("/ui/p/vision/wide/v0?dir=dir&page=4", ui.reader).status_code == 404


def test_lineage_page_draws_the_graph_of_the_lineage_route(ui: UiRegistry) -> None:
    route = httpx.get(
        f"{ui.url}/v1/projects/vision/artifacts/model/versions/0/lineage?up=all&down=all",
        headers={"Authorization": f"Bearer {ui.reader}"},
    ).json()
    page = ui.get("/ui/p/vision/model/v0/lineage?up=all&down=all", ui.reader).text
    svg = page[page.index("<svg") : page.index("</svg>")]
    drawn = re.findall(r'<g class="node kind-(\w+)[^"]*" data-id="([^"]+)"', svg)
    assert sorted(i for _, i in drawn) == sorted(n["id"] for n in route["nodes"])
    assert svg.count('class="edge"') == len(route["edges"])
    assert 'href="/ui/p/vision/data/v1"' in svg and 'href="/ui/p/vision/eval/v0"' in svg
    assert 'class="node kind-version root" data-id="vision/model:v0"' in svg
    one = ui.get("/ui/p/vision/model/v0/lineage?up=0&down=1", ui.reader).text
    assert "vision/data:v1" not in one and "vision/eval:v0" in one
    assert ui.get("/ui/p/vision/model/v0/lineage?up=-1", ui.reader).status_code == 400


def test_auth_off_has_no_prompt(registry_server: RunningServer) -> None:
    r = httpx.get(f"{registry_server.url}/ui/")
    assert r.status_code == 200 and 'name="token"' not in r.text and "Log out" not in r.text
    login = httpx.get(f"{registry_server.url}/ui/login")
    assert login.status_code == 303 and login.headers["location"] == "/ui/"
    assert httpx.get(f"{registry_server.url}/ui/static/ui.js").status_code == 200
    assert httpx.get(f"{registry_server.url}/ui/static/x.js").status_code == 404
