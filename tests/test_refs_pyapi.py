"""External references made and shown outside ``put --ref`` (issue 12, item 3): the Python
``Draft.add_ref`` against a real server (both configurations) and a registry directory,
refs a draft keeps from its base, ``Version.files()`` marking refs, ``artfs info`` and the
web page's version view listing them, and old clients still refused."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

import artfs
from tests.e2e import mounted, run_cli
from tests.pyapi_helpers import Target, private_dirs, sha, target
from tests.refsources import S3_ENDPOINT, Place, place

__all__ = ["place", "private_dirs", "target"]  # fixtures

pytestmark = pytest.mark.timeout(300)
BIG = 3 * 1024 * 1024 + 12_345  # 25 blocks, the last one short: a block list of 800 bytes


@pytest.fixture(autouse=True)
def ref_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARTFS_REF_FILE_ROOTS", str(tmp_path / "data"))
    if S3_ENDPOINT:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", S3_ENDPOINT)


@pytest.fixture
def reg(target: Target, tmp_path: Path) -> Iterator[artfs.Registry]:
    with artfs.Registry(target.location, cache_dir=tmp_path / "cache") as r:
        yield r


def local(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "local" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_draft_add_ref_commits_refs_that_open_and_download(
    reg: artfs.Registry, target: Target, place: Place, tmp_path: Path
) -> None:
    rng = random.Random(21)
    big, small = rng.randbytes(BIG), b"a small ref\n"
    base = reg.put(local(tmp_path, "notes.txt", b"base notes\n"), "p/d")
    d = reg.draft("p/d", base=base)
    assert d.add_ref(place.put("big.bin", big), "/data/big.bin") == "data/big.bin"
    d.add_ref(place.put("small.txt", small), "small.txt")
    d.add_file(local(tmp_path, "eval.json", b'{"acc": 1}'), "eval.json")
    assert d.paths() == ["data/big.bin", "eval.json", "notes.txt", "small.txt"]
    with pytest.raises(artfs.InvalidInput, match="read at commit"):
        d.size_of("data/big.bin")
    v = d.commit(description="with refs")
    assert v.ref == "p/d:v1"
    assert d.uploaded == 10 + 25 * 32  # eval.json and big.bin's block list, no ref bytes

    files = {f.path: f for f in v.files()}
    assert files["data/big.bin"].url is not None and files["data/big.bin"].is_ref
    assert (files["data/big.bin"].size, files["data/big.bin"].sha256) == (BIG, sha(big))
    assert files["small.txt"].is_ref and files["small.txt"].sha256 == sha(small)
    assert files["notes.txt"].url is None and files["eval.json"].url is None
    assert [f.path for f in v.refs()] == ["data/big.bin", "small.txt"]
    assert v.file("small.txt") == files["small.txt"]
    assert base.refs() == []

    fresh = reg.version("p/d:v1")  # read back: the refs come from the registry's manifest
    with fresh.open("data/big.bin") as f:
        f.seek(2_000_000)
        assert f.read(100_000) == big[2_000_000:2_100_000]
    assert fresh.read_bytes("small.txt") == small
    out = fresh.download(tmp_path / "out")
    assert (out / "data/big.bin").read_bytes() == big
    assert (out / "small.txt").read_bytes() == small
    assert (out / "notes.txt").read_bytes() == b"base notes\n"
    fresh.verify(out)

    if target.server is not None:  # a client that predates refs is still refused clearly
        url = f"{target.location}/v1/projects/p/artifacts/d/versions/1/manifest"
        old = httpx.get(url, timeout=10)
        assert old.status_code == 400 and "predates" in old.text, old.text
        assert httpx.get(url, timeout=10, params={"refs": "1"}).status_code == 200
        assert httpx.get(url.replace("/1/", "/0/"), timeout=10).status_code == 200  # no refs


def test_fsspec_marks_refs_with_their_url(
    reg: artfs.Registry, target: Target, place: Place, tmp_path: Path
) -> None:
    """``ls``/``info`` of the fsspec filesystem give a ref's ``url`` (as ``File.url``); other
    files have none; its bytes read through fsspec like any file's."""
    from artfs.api.fsspec_fs import ArtfsFileSystem

    small = b"a small ref\n"
    d = reg.draft("p/r")
    url = place.put("small.txt", small)
    d.add_ref(url, "refs/small.txt")
    d.add_file(local(tmp_path, "own.txt", b"own bytes\n"), "refs/own.txt")
    d.commit()
    fs = ArtfsFileSystem(registry=target.location, cache_dir=str(tmp_path / "cache"))
    try:
        listed = {e["name"].rsplit("/", 1)[1]: e for e in fs.ls("p/r:v0/refs")}
        assert listed["small.txt"]["url"] == url and listed["small.txt"]["size"] == len(small)
        assert "url" not in listed["own.txt"]
        info = fs.info("p/r:v0/refs/small.txt")
        assert info["url"] == url and info["sha256"] == sha(small)
        assert "url" not in fs.info("p/r:latest/refs/own.txt")
        assert fs.cat_file("p/r:v0/refs/small.txt") == small
    finally:
        fs.registry.close()
        ArtfsFileSystem.clear_instance_cache()


def test_a_draft_keeps_its_bases_refs_and_a_local_copy_replaces_one(
    reg: artfs.Registry, tmp_path: Path
) -> None:
    """Before add_ref, a draft based on a version with refs could not commit at all (the
    refs' bytes are not in the registry: "no longer in the registry and have no local
    copy"). Kept files that were refs stay refs; removed ones leave the manifest's refs."""
    data = tmp_path / "data"
    data.mkdir()
    rng = random.Random(22)
    a, b = rng.randbytes(BIG), rng.randbytes(1000)
    (data / "a.bin").write_bytes(a)
    (data / "b.bin").write_bytes(b)
    v0 = reg.put(
        None, "p/k", refs={"a.bin": (data / "a.bin").as_uri(), "b.bin": (data / "b.bin").as_uri()}
    )

    d = reg.draft("p/k", base="latest")
    d.remove("b.bin")
    d.add_file(local(tmp_path, "c.txt", b"c\n"), "c.txt")
    v1 = d.commit()
    assert d.uploaded == 2  # only c.txt: a's block list is already there, b is gone
    assert {f.path: f.url for f in v1.files()} == {
        "a.bin": (data / "a.bin").as_uri(),
        "c.txt": None,
    }
    assert list(v1.manifest().refs) == [sha(a)]  # b's ref left with b
    assert reg.version("p/k:v1").read_bytes("a.bin") == a

    # the same bytes as a local file: uploaded and no longer a ref (the registry holds them)
    d2 = reg.draft("p/k", base=v1)
    d2.add_file(local(tmp_path, "a-copy.bin", a), "a.bin")
    d2.add_ref((data / "b.bin").as_uri(), "c.txt")  # a ref replaces a kept local file
    v2 = d2.commit()
    assert d2.uploaded == BIG
    assert {f.path: f.url for f in v2.files()} == {
        "a.bin": None,
        "c.txt": (data / "b.bin").as_uri(),
    }
    (data / "a.bin").unlink()  # v2 no longer needs the source; v0 does
    with artfs.Registry(reg.url, cache_dir=tmp_path / "cache2") as cold:
        assert cold.version("p/k:v2").read_bytes("a.bin") == a
    with (
        artfs.Registry(reg.url, cache_dir=tmp_path / "cache3") as cold,  # (a not cached)
        pytest.raises(artfs.IntegrityError, match="external ref"),
    ):
        cold.version(v0.ref).read_bytes("a.bin")


def test_add_ref_refuses_bad_urls_and_a_missing_source_commits_nothing(
    reg: artfs.Registry, tmp_path: Path
) -> None:
    d = reg.draft("p/bad")
    for url, said in (
        ("ftp://host/x", "scheme"),
        ("s3://bucket", "no host/bucket or key"),
        ("file://host/x", "file:///absolute/path"),
        ("https://h/\x01", "control character"),
    ):
        with pytest.raises(artfs.InvalidInput, match=said):
            d.add_ref(url, "x")
    with pytest.raises(artfs.InvalidInput):
        d.add_ref("https://example.org/x", "../x")  # the path rules of any file
    assert d.paths() == []
    d.add_ref((tmp_path / "nope.bin").as_uri(), "x")
    with pytest.raises(artfs.NotFound, match="No such file"):
        d.commit()
    with pytest.raises(artfs.NotFound, match="No such file"):
        reg.put(None, "p/bad", refs={"x": (tmp_path / "nope.bin").as_uri()})
    with pytest.raises(artfs.NotFound):
        reg.version("p/bad")
    assert d.remove("x") == 1
    with pytest.raises(artfs.InvalidInput, match="no files"):
        d.commit()


def test_async_twin_commits_a_draft_with_refs(target: Target, tmp_path: Path) -> None:
    import artfs.aio

    data = tmp_path / "data"
    data.mkdir()
    (data / "r.bin").write_bytes(b"r" * 5000)

    async def main() -> tuple[list[artfs.File], bytes]:
        async with artfs.aio.Registry(target.location, cache_dir=tmp_path / "cache") as areg:
            d = await areg.draft("p/aio")
            d.add_ref((data / "r.bin").as_uri(), "r.bin")  # no I/O until commit
            v = await areg.commit(d)
            return await areg.files(v), await areg.read(v, "r.bin")

    files, body = asyncio.run(main())
    assert [(f.path, f.url) for f in files] == [("r.bin", (data / "r.bin").as_uri())]
    assert body == b"r" * 5000


def test_info_lists_refs_briefly_and_json_fully(target: Target, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with artfs.Registry(target.location, cache_dir=tmp_path / "cache") as reg:
        d = reg.draft("p/many")
        for i in range(12):
            (data / f"r{i:02}.bin").write_bytes(bytes([i]) * (100 + i))
            d.add_ref((data / f"r{i:02}.bin").as_uri(), f"refs/r{i:02}.bin")
        d.add_file(local(tmp_path, "plain.txt", b"plain\n"), "plain.txt")
        d.commit()
        reg.put(local(tmp_path, "only.txt", b"only\n"), "p/none")

    def info(*args: str) -> dict[str, object]:
        out = run_cli("info", "--registry", target.location, *args)
        facts: dict[str, object] = json.loads(out.stdout)
        return facts

    def row(i: int) -> dict[str, object]:
        body = bytes([i]) * (100 + i)
        url = (data / f"r{i:02}.bin").as_uri()
        return {"path": f"refs/r{i:02}.bin", "url": url, "size": len(body), "sha256": sha(body)}

    brief = info("p/many:v0")["external_refs"]
    assert brief == {"count": 12, "files": [row(i) for i in range(10)], "more": 2}
    full = info("p/many:v0", "--json")["external_refs"]
    assert full == {"count": 12, "files": [row(i) for i in range(12)]}
    if target.server is not None:  # the route info asks (docs/api.md), its limit checked
        from artfs.client import open_client
        from artfs.client.http_refs import RefsHttp

        client = open_client(target.location)  # (what info uses: the route, not the manifest)
        assert isinstance(getattr(client, "inner", client), RefsHttp)
        trio.run(client.aclose)
        url = f"{target.location}/v1/projects/p/artifacts/many/versions/0/refs"
        assert httpx.get(url, params={"limit": "0"}, timeout=10).json() == {
            "count": 12,
            "files": [],
            "more": 12,
        }
        bad = httpx.get(url, params={"limit": "-1"}, timeout=10)
        assert bad.status_code == 400 and "invalid limit" in bad.text, bad.text
        assert httpx.get(url.replace("/0/", "/7/"), timeout=10).status_code == 404
    assert info("p/none")["external_refs"] == {"count": 0, "files": []}
    if os.path.exists("/dev/fuse"):  # a path in a mount: that file's source
        with mounted(target.location, tmp_path / "m", tmp_path / "mc") as m:
            one = info(str(m / "p/many/v0/refs/r03.bin"))
            assert one["external_ref"] == (data / "r03.bin").as_uri()
            assert one["ref"] == "p/many:v0" and one["size"] == 103
            assert "external_ref" not in info(str(m / "p/many/v0/plain.txt"))


def test_web_page_marks_refs_in_the_version_view(target: Target, tmp_path: Path) -> None:
    if target.server is None:
        pytest.skip("a registry directory has no web page (artfs serve serves it)")
    data = tmp_path / "data"
    data.mkdir()
    (data / "r.bin").write_bytes(b"ref bytes")
    with artfs.Registry(target.location, cache_dir=tmp_path / "cache") as reg:
        d = reg.draft("p/web")
        d.add_ref((data / "r.bin").as_uri(), "sub/r.bin")
        d.add_file(local(tmp_path, "plain.txt", b"plain\n"), "sub/plain.txt")
        d.commit()
    page = httpx.get(f"{target.location}/ui/p/p/web/v0", params={"dir": "sub"}, timeout=10)
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="refs-count">1 file read from their source URL' in html
    row = next(line for line in html.splitlines() if "r.bin" in line and "<tr" in line)
    assert 'class="file ref"' in row and (data / "r.bin").as_uri() in row
    assert "/ui/blob/" not in row  # the registry does not hold a ref's bytes: no link
    plain = next(line for line in html.splitlines() if "plain.txt" in line and "<tr" in line)
    assert "/ui/blob/" in plain and "ref-url" not in plain
    top = httpx.get(f"{target.location}/ui/p/p/web/v0", timeout=10).text
    assert "refs-count" in top  # the count is the version's, on every directory's page
