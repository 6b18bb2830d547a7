"""External refs, the pure parts (issue 12, item 3): manifest digests (unchanged without
refs), the canonical form and its parser, JSON round trips, ``.artfs-ref`` files, URL
rules, and the reading client's dispatch with an in-memory source and a fault."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from artfs.cache.blobcache import BlobCache
from artfs.client.memory import MemoryRegistryClient
from artfs.errors import IntegrityError, InvalidInput, NotPermitted
from artfs.hashing import BlobHasher
from artfs.manifest import Manifest
from artfs.manifest_stream import CanonicalParser, canonical_chunks
from artfs.refs.client import RefReadingClient
from artfs.refs.model import BlobRef, parse_ref_file
from artfs.refs.sources import DataSink, FileSource, Sources

SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()


def test_a_manifest_without_refs_keeps_its_old_digest_and_json() -> None:
    m = Manifest.build([("a", 1, SHA_A), ("b", 1, SHA_B)])
    canonical = f"a\x001\x00{SHA_A}\nb\x001\x00{SHA_B}\n".encode()
    assert m.digest == hashlib.sha256(canonical).hexdigest()
    assert m.to_json() == {"files": [["a", 1, SHA_A], ["b", 1, SHA_B]]}  # no "refs" key
    assert m.stored_blobs() == m.blobs()


def test_refs_enter_the_digest_the_canonical_form_and_the_json() -> None:
    files = [("a", 1, SHA_A), ("b", 1, SHA_B)]
    m = Manifest.build(files, refs={SHA_B: BlobRef("s3://bkt/key")})
    other = Manifest.build(files, refs={SHA_B: BlobRef("s3://bkt/other")})
    assert len({m.digest, other.digest, Manifest.build(files).digest}) == 3
    raw = b"".join(canonical_chunks(m))
    assert raw.endswith(f"\x00ref\x00{SHA_B}\x00\x00s3://bkt/key\n".encode())
    assert hashlib.sha256(raw).hexdigest() == m.digest
    parser = CanonicalParser()
    assert parser.feed(raw[:7]) + parser.feed(raw[7:]) == [(p, s, h) for p, s, h in files]
    assert parser.finish() == m.digest and parser.refs == {SHA_B: BlobRef("s3://bkt/key")}
    back = Manifest.from_json(m.to_json())
    assert back == m and dict(back.refs) == dict(m.refs)
    assert m.stored_blobs() == {SHA_A: 1}  # a ref's bytes are not the registry's


def test_a_big_ref_needs_its_block_list_which_the_registry_holds() -> None:
    size = 300_000  # 3 blocks
    with pytest.raises(InvalidInput, match="names no block list"):
        Manifest.build([("x", size, SHA_A)], refs={SHA_A: BlobRef("https://h/x")})
    m = Manifest.build([("x", size, SHA_A)], refs={SHA_A: BlobRef("https://h/x", SHA_B)})
    assert m.stored_blobs() == {SHA_B: 3 * 32}
    with pytest.raises(InvalidInput, match="one block"):
        Manifest.build([("x", 10, SHA_A)], refs={SHA_A: BlobRef("https://h/x", SHA_B)})


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("ftp://h/x", "scheme"),
        ("file://host/x", "file:///absolute"),
        ("s3://bucket", "no host/bucket or key"),
        ("https:///x", "no host"),
        ("https://h/x\ny", "control character"),
    ],
)
def test_bad_ref_urls_are_refused(url: str, said: str) -> None:
    with pytest.raises(InvalidInput, match=said):
        Manifest.build([("x", 1, SHA_A)], refs={SHA_A: BlobRef(url)})


def test_a_ref_must_name_a_blob_of_the_manifest() -> None:
    with pytest.raises(InvalidInput, match="names no file"):
        Manifest.build([("x", 1, SHA_A)], refs={SHA_B: BlobRef("s3://b/k")})


def test_the_parser_of_an_old_reader_fails_on_a_ref_record() -> None:
    """What a client that predates refs does with the canonical form: it stops, with an
    error, at the first ref record (it reads a path "" and a size "ref")."""
    m = Manifest.build([("a", 1, SHA_A)], refs={SHA_A: BlobRef("s3://b/k")})
    raw = b"".join(canonical_chunks(m))
    record = raw[raw.index(b"\x00ref") :]
    size = record.split(b"\x00")[1]
    assert not size.isdigit()
    parser = CanonicalParser()
    with pytest.raises(InvalidInput):  # files after refs, or a damaged record
        parser.feed(raw + b"z\x001\x00" + SHA_A.encode() + b"\n")


@pytest.mark.parametrize(
    ("text", "url"),
    [
        (b"s3://b/k\n", "s3://b/k"),
        (b'{"url": "https://h/x"}', "https://h/x"),
        (b"  file:///data/x  \n", "file:///data/x"),
    ],
)
def test_ref_files(text: bytes, url: str) -> None:
    assert parse_ref_file(text) == url


@pytest.mark.parametrize(
    "text", [b"", b"s3://b/k\ns3://b/l", b'{"url": 1}', b'{"uri": "s3://b/k"}', b"\xff"]
)
def test_bad_ref_files(text: bytes) -> None:
    with pytest.raises(InvalidInput):
        parse_ref_file(text)


def test_file_source_stays_under_its_roots(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    inside = tmp_path / "ok" / "x"
    inside.write_bytes(b"x")
    os.symlink("/etc/passwd", tmp_path / "ok" / "escape")
    source = FileSource([str(tmp_path / "ok")])
    assert source.path_of(inside.as_uri()) == str(inside)
    for url in ("file:///etc/shadow", (tmp_path / "ok" / "escape").as_uri()):
        with pytest.raises(NotPermitted, match="ARTFS_REF_FILE_ROOTS"):
            source.path_of(url)
    with pytest.raises(NotPermitted):
        FileSource([]).path_of(inside.as_uri())


class MemorySource:
    """The in-memory twin of a ref source, with a fault: ``objects[url]`` may be changed."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads = 0

    async def read(self, url: str, size: int, offset: int, length: int, sink: DataSink) -> None:
        self.reads += 1
        data = self.objects[url]
        if len(data) != size:
            raise IntegrityError(f"external ref {url} changed since it was committed")
        sink(data[offset : offset + length])

    async def size(self, url: str) -> int:
        return len(self.objects[url])

    async def aclose(self) -> None:
        pass


async def test_the_cache_reads_a_ref_from_its_source_verified(tmp_path: Path) -> None:
    reg = MemoryRegistryClient()
    data = os.urandom(5 * 131072 + 99)
    h = BlobHasher()
    h.update(data)
    blocks_sha = reg.add_blob(h.block_digests())  # the block list is a registry blob
    memory = MemorySource()
    memory.objects["s3://b/k"] = data
    sources = Sources()
    sources.overrides["s3"] = memory
    client = RefReadingClient(reg, sources)
    client.add({h.hexdigest(): BlobRef("s3://b/k", blocks_sha)})
    async with BlobCache(tmp_path / "c", client) as cache:  # type: ignore[arg-type]
        reader = await cache.open(h.hexdigest(), len(data))
        assert await reader.read(131072 * 2 + 5, 1000) == data[131072 * 2 + 5 :][:1000]
        await reader.aclose()
        path = await cache.fetch(h.hexdigest(), len(data))
        assert path.read_bytes() == data
    assert memory.reads >= 2
    changed = bytearray(data)
    changed[3 * 131072] ^= 1
    memory.objects["s3://b/k"] = bytes(changed)
    async with BlobCache(tmp_path / "c2", client) as cache:  # type: ignore[arg-type]
        reader = await cache.open(h.hexdigest(), len(data))
        assert await reader.read(0, 100) == data[:100]
        with pytest.raises(IntegrityError):
            await reader.read(3 * 131072, 100)
        await reader.aclose()


async def test_a_hung_http_source_is_unavailable_within_its_deadline() -> None:
    """A server that accepts and never answers: both the commit's size probe and a read
    give up after the source's timeout, as ``Unavailable``."""
    import socket

    import trio

    from artfs.errors import Unavailable
    from artfs.refs.sources import HttpSource

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
    source = HttpSource(timeout=0.5)
    sources = Sources(timeout=0.5)
    sources.overrides["http"] = source
    try:
        start = trio.current_time()
        with pytest.raises(Unavailable):
            await sources.size(url)
        with pytest.raises(Unavailable):
            await source.read(url, 10, 0, 10, lambda b: None)
        assert trio.current_time() - start < 10  # two 0.5 s deadlines, generous bound
    finally:
        await source.aclose()
        listener.close()


def test_refs_and_extras_in_one_manifest() -> None:
    """A version with external refs AND executable bits, symlinks and empty dirs (two
    features that each add NUL-led records to the canonical form): one digest over both,
    the stream parses back to the same records and refs, and JSON round-trips."""
    m = Manifest.build(
        [("bin/run.sh", 3, SHA_A), ("data/x", 5, SHA_B)],
        refs={SHA_B: BlobRef("s3://bkt/x")},
        executable=["bin/run.sh"],
        symlinks=[("latest.sh", "bin/run.sh")],
        dirs=["empty"],
    )
    plain = Manifest.build([("bin/run.sh", 3, SHA_A), ("data/x", 5, SHA_B)])
    only_refs = Manifest.build(
        [("bin/run.sh", 3, SHA_A), ("data/x", 5, SHA_B)], refs={SHA_B: BlobRef("s3://bkt/x")}
    )
    assert len({m.digest, plain.digest, only_refs.digest}) == 3
    again = Manifest.from_json(m.to_json())
    assert again.digest == m.digest and again.refs == m.refs
    assert again.symlinks == {"latest.sh": "bin/run.sh"} and again.dirs == ("empty",)
    assert next(iter(m.to_json())) == "refs"  # refs first: the server's has_refs test
    for size in (1, 7, 1 << 20):  # chunk boundaries anywhere in a record
        data = b"".join(canonical_chunks(m))
        parser = CanonicalParser()
        records = [r for i in range(0, len(data), size) for r in parser.feed(data[i : i + size])]
        assert parser.finish() == m.digest
        assert parser.refs == {SHA_B: BlobRef("s3://bkt/x")}
        assert [r[0] for r in records] == [
            "bin/run.sh",
            "bin/run.sh",
            "data/x",
            "empty",
            "latest.sh",
        ]
    late_extra = b"".join(canonical_chunks(m)) + b"\x00x\x00data/x\x00\x00\n"
    with pytest.raises(InvalidInput, match="after the refs"):
        CanonicalParser().feed(late_extra)
