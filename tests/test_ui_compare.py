"""Comparing versions over the stored canonical form (server/ui/canonical.py) and the
canonical manifests a commit stores (schema 11, registry/canonicaldb.py).

The pure part checks the merge walk against the dict-based ``views.classify`` on random
manifests with odd paths (LF, NUL-adjacent bytes, quotes, non-ASCII, prefixes of each
other), extras and refs; the served part checks, on both configurations, that the
manifest route's canonical bytes are what the JSON converts to, and that a registry made
before schema 11 (no stored canonical rows) still compares and serves, storing each
version's canonical form on its first read.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from artfs.manifest import Manifest
from artfs.manifest_stream import canonical_chunks, canonical_from_json, encode_canonical
from artfs.refs.model import BlobRef
from artfs.registry import Registry
from artfs.registry.core import encode_manifest
from artfs.server.requestio import canonical_manifest
from artfs.server.ui import views
from artfs.server.ui.canonical import classify_canonical, parsed_rows, plain_records

from .backends import RegistrySpec, backend_params, make_spec, release
from .conftest_server import RunningServer, start_spec_server, stop_server

ODD = ["a", "a.b", "a b", "a/b", "a0", "é/ü.txt", 'q"u\\ote', "tab\tx", "日本/語", "z~", "ab"]


def sha(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def random_pair(rng: random.Random, lf: bool) -> tuple[list[tuple[str, int, str]], ...]:
    names = {f"{rng.choice(ODD)}/{rng.randrange(300)}-{rng.choice(ODD)}" for _ in range(200)}
    if lf:
        names.add("new\nline/f")  # a LF in a path: the walk must not split it
    a = {p: (rng.randrange(5), rng.randrange(6)) for p in names}
    b = dict(a)
    for p in rng.sample(sorted(a), 40):
        roll = rng.random()
        if roll < 0.3:
            del b[p]
        elif roll < 0.6:
            b[p] = (a[p][0], a[p][1] + 100)  # another blob
        else:
            b[f"{p}~{rng.randrange(3)}"] = (1, rng.randrange(6))
    for _ in range(20):
        b[f"{rng.choice(ODD)}/new-{rng.randrange(10_000)}"] = (2, rng.randrange(6))
    rows = tuple([(p, s, sha(h)) for p, (s, h) in sorted(m.items())] for m in (a, b))
    return rows


def norm(row: Any) -> tuple[str, int, str]:
    """A row as a tuple of (str, int, str), whatever sequence holds it."""
    path, size, digest = row
    text = (v.decode() if isinstance(v, bytes) else v for v in (path, digest))
    return next(text), int(size), next(text)


def as_lists(c: views.Classified) -> tuple[Any, ...]:
    def t(rows: Any) -> list[Any]:
        return [norm(r) for r in rows]

    return t(c.removed), t(c.added), [(norm(o), norm(n)) for o, n in c.changed], c.same


def check_pair(ma: Manifest, mb: Manifest) -> views.Classified:
    want = views.classify(ma.to_json()["files"], mb.to_json()["files"])  # the old path
    urls_a, urls_b = ({sha: ref.url for sha, ref in m.refs.items()} for m in (ma, mb))
    want = replace(want, refs_a=urls_a, refs_b=urls_b)  # (JSON rows leave refs out)
    ca, cb = (b"".join(canonical_chunks(m)) for m in (ma, mb))
    got = classify_canonical(ca, cb)
    assert as_lists(got) == as_lists(want)
    for kind in views.KINDS:  # what a page shows: rows, counts and sizes of every kind
        assert views.compare(got, kind, 1) == views.compare(want, kind, 1)
    return got


@pytest.mark.parametrize("seed", range(12))
def test_the_walk_equals_the_dict_diff_on_random_manifests(seed: int) -> None:
    rng = random.Random(seed)
    a, b = random_pair(rng, lf=seed % 3 == 0)
    ma, mb = Manifest.build(a), Manifest.build(b)
    got = check_pair(ma, mb)
    assert got.removed and got.added and got.changed  # (each kind was exercised)
    plain = plain_records(b"".join(canonical_chunks(ma)))
    assert (plain is None) == (seed % 3 == 0)  # a LF in a path: parsed record by record
    assert as_lists(check_pair(ma, ma))[:3] == ([], [], []) and check_pair(ma, ma).same == len(a)
    check_pair(Manifest.build([]), mb)
    check_pair(ma, Manifest.build([]))


def test_extras_and_refs_are_left_out_as_in_the_page() -> None:
    files = [("bin/run.sh", 3, sha(1)), ("data/a.txt", 4, sha(2)), ("data/b", 5, sha(3))]
    shaped = Manifest.build(
        files,
        executable=["bin/run.sh"],
        symlinks=[("data/current", "a.txt")],
        dirs=["logs"],
        refs={sha(3): BlobRef("s3://bkt/key")},
    )
    raw = b"".join(canonical_chunks(shaped))
    assert plain_records(raw) is None  # NUL-led records: not the fast path
    assert parsed_rows(raw) == files
    other = Manifest.build([*files[:2], ("data/b", 6, sha(4))])
    c = check_pair(shaped, other)
    assert [(o[0], n[0]) for o, n in c.changed] == [("data/b", "data/b")] and c.same == 2
    # The page marks each side that is an external ref, with its URL; the same blob stored
    # in the other version (data/a.txt below) is not a ref there.
    other = Manifest.build([files[0], ("data/a.txt", 5, sha(3)), ("data/b", 6, sha(4))])
    marks = {
        r.path: (r.url_a, r.url_b)
        for r in views.compare(check_pair(shaped, other), "changed", 1).rows
    }
    assert marks == {"data/a.txt": ("", ""), "data/b": ("s3://bkt/key", "")}
    back = {
        r.path: (r.url_a, r.url_b)
        for r in views.compare(check_pair(other, shaped), "changed", 1).rows
    }
    assert back == {"data/a.txt": ("", ""), "data/b": ("", "s3://bkt/key")}


def test_the_stored_form_is_the_converted_json() -> None:
    files = [("a\nb", 1, sha(1)), ("é", 2, sha(2)), ("x/y", 3, sha(3))]
    ref = {sha(2): BlobRef("https://h/x")}
    for m in (
        Manifest.build(files, executable=["x/y"], symlinks=[("l", "é")], refs=ref),
        Manifest.build(files, refs=ref),  # (no extras: encoded in one pass)
        Manifest.build(files),
    ):
        raw = gzip.decompress(encode_canonical(m))
        assert raw == b"".join(canonical_chunks(m))
        assert raw == canonical_manifest(encode_manifest(m), False)
        assert raw == canonical_from_json(json.loads(gzip.decompress(encode_manifest(m))))
        assert hashlib.sha256(raw).hexdigest() == m.digest


# --------------------------------------------------------------------------- served


def _files(n: int, changed: int = 0, extra: str = "") -> list[tuple[str, int, str]]:
    """Files of the blobs ``str(k).encode()`` (one byte each) the fixture stores."""
    rows = [(f"d{i % 7}/f{i:04d}{extra}.bin", 1, sha(i % 5)) for i in range(n)]
    return [(p, 1, sha(9)) if i < changed else (p, s, h) for i, (p, s, h) in enumerate(rows)]


class Served:
    def __init__(self, spec: RegistrySpec, server: RunningServer) -> None:
        self.spec, self.server = spec, server

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.server.url + path, timeout=30, **kw)

    def canonical_rows(self) -> int:
        reg = self.spec.open()
        try:
            meta: Any = reg.meta
            with meta._read() as c:
                return int(meta._q(c, "SELECT COUNT(*) FROM canonical_manifests").fetchone()[0])
        finally:
            reg.close()


def _commit_all(reg: Registry, tmp: Path) -> None:
    for i in (*range(5), 9):
        (tmp / "blob").write_bytes(str(i).encode())
        reg.put_file(sha(i), tmp / "blob")
    reg.create_project("p")
    reg.create_artifact("p", "d", type="dataset")
    reg.commit("p", "d", Manifest.build(_files(300)))
    odd = [*_files(280, changed=30), ('odd\nname "q" é', 1, sha(9)), ("new/x", 1, sha(9))]
    reg.commit("p", "d", Manifest.build(odd, executable=["new/x"], dirs=["empty"]))
    reg.create_artifact("p", "r", type="dataset")
    reg.commit("p", "r", Manifest.build(_files(3), refs={sha(1): BlobRef("s3://bkt/k")}))
    # v1: the ref d1/f0001.bin becomes a stored file, a ref is added
    first, _, third = _files(3)
    v1 = [first, ("d1/f0001.bin", 1, sha(3)), third, ("e/ref", 1, sha(4))]
    reg.commit("p", "r", Manifest.build(v1, refs={sha(4): REF_URL}))


@pytest.fixture(scope="module", params=backend_params())
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("cmp")
    spec = make_spec(request.param, root / "data", for_servers=True)
    try:
        reg = spec.open()
        try:
            _commit_all(reg, root)
        finally:
            reg.close()
        server = start_spec_server(spec)
        try:
            yield Served(spec, server)
        finally:
            stop_server(server.proc)
    finally:
        release(spec)


COMPARE = "/ui/p/p/d/compare?a=0&b=1"
REF_URL = BlobRef("https://h/x?a=1&b=2")
SUMMARY = re.compile(r"(\d+) changed \([^)]*\), (\d+) added \([^)]*\), (\d+) removed")


def _manifest_bytes(s: Served, art: str, number: int) -> dict[str, bytes]:
    base = f"/v1/projects/p/artifacts/{art}/versions/{number}/manifest"
    out = {}
    for fmt in ("json", "canonical"):
        for enc in ("gzip", "identity"):
            r = s.get(f"{base}?format={fmt}&refs=1", headers={"Accept-Encoding": enc})
            assert r.status_code == 200, r.text
            out[f"{fmt}-{enc}"] = r.content  # (httpx inflates a gzip body)
    return out


def test_commit_stores_the_canonical_form_and_the_route_serves_it(served: Served) -> None:
    assert served.canonical_rows() == 4
    for art, number in (("d", 0), ("d", 1), ("r", 0), ("r", 1)):
        got = _manifest_bytes(served, art, number)
        assert got["canonical-gzip"] == got["canonical-identity"]
        assert got["canonical-gzip"] == canonical_from_json(json.loads(got["json-identity"]))
    old_client = served.get("/v1/projects/p/artifacts/r/versions/0/manifest?format=canonical")
    assert old_client.status_code == 400 and "external references" in old_client.text
    page = served.get(COMPARE)
    assert page.status_code == 200
    assert SUMMARY.search(page.text).groups() == ("30", "2", "20")  # type: ignore[union-attr]
    added = served.get(COMPARE + "&show=added").text
    assert "odd\nname &#34;q&#34; é" in added and "new/x" in added
    assert 'class="ref"' not in added


def _diff_cells(html: str) -> list[list[str]]:
    """The compare page's table rows, each cell's text (tags dropped)."""
    body = html.split('<table id="diff"', 1)[1].split("</table>", 1)[0].split("<tbody>", 1)[1]
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def test_the_compare_page_marks_external_refs(served: Served) -> None:
    changed = _diff_cells(served.get("/ui/p/p/r/compare?a=0&b=1").text)
    assert changed == [
        ["d1/f0001.bin", "1", "1", f"{sha(1)[:16]} ref s3://bkt/k", sha(3)[:16]],
    ]
    added = served.get("/ui/p/p/r/compare?a=0&b=1&show=added").text
    assert _diff_cells(added) == [
        ["e/ref", "", "1", "", f"{sha(4)[:16]} ref https://h/x?a=1&amp;b=2"]
    ]
    removed = _diff_cells(served.get("/ui/p/p/r/compare?a=1&b=0&show=removed").text)
    assert removed == [["e/ref", "1", "", f"{sha(4)[:16]} ref https://h/x?a=1&amp;b=2", ""]]


def test_a_registry_from_before_schema_11_compares_and_serves(served: Served) -> None:
    before = {(a, n): _manifest_bytes(served, a, n) for a, n in (("d", 0), ("d", 1), ("r", 0))}
    reg = served.spec.open()
    try:
        meta: Any = reg.meta
        with meta._write() as c:  # what an older registry has: no canonical rows
            meta._q(c, "DELETE FROM canonical_manifests")
    finally:
        reg.close()
    assert served.canonical_rows() == 0
    after = {(a, n): _manifest_bytes(served, a, n) for a, n in before}
    assert after == before  # converted from the JSON: the same bytes
    assert served.canonical_rows() == 3  # and stored by the first read
    reg = served.spec.open()
    try:
        meta = reg.meta
        with meta._write() as c:
            meta._q(c, "DELETE FROM canonical_manifests")
    finally:
        reg.close()
    page = served.get("/ui/p/p/d/compare?a=1&b=0")  # (another pair: not a kept comparison)
    assert SUMMARY.search(page.text).groups() == ("30", "20", "2")  # type: ignore[union-attr]
    assert served.canonical_rows() == 2
    reg = served.spec.open()
    try:
        reg.delete_version("p", "d", 0)  # its canonical form goes with its JSON
    finally:
        reg.close()
    assert served.canonical_rows() == 1
