"""A manifest's canonical form as a stream: what the mount fetches, keeps on disk and parses.

Pure and synchronous. The canonical form is the bytes a manifest's digest is computed
over (``manifest._digest``): ``path NUL size NUL sha256 LF`` per file, sorted by path.
It is unambiguous although paths may hold a LF (never a NUL): a record is read up to its
first NUL, then the size up to the next, then exactly 64 hex digits and the LF.

Serving and keeping manifests in this form lets the mount go from bytes to its packed
tree (``fs/packed.py``) one chunk at a time, checking the digest as the bytes pass: no
JSON document of a million entries, and no object per entry, is ever in memory (the
JSON path peaked at ~600 MB for 1,000,000 files; docs/decisions.md, "Packed version trees").
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .errors import InvalidInput
from .manifest import Manifest
from .manifest_extras import EXTRA as EXTRA
from .manifest_extras import canonical_lines, merged, stored
from .refs.model import BlobRef, check_url, refs_from_json


def records(manifest: Manifest) -> Iterator[tuple[str, int, str]]:
    """The records of ``manifest`` as ``CanonicalParser`` gives them, without the bytes."""
    return merged(((p, e.size, e.sha256) for p, e in manifest.items()), manifest.extras)


MEDIA_TYPE = "application/vnd.artfs.manifest.canonical"  # the HTTP Content-Type
FORMAT = "canonical"  # the ``format`` query parameter of GET .../manifest
MAX_RECORD = 1 << 16  # a record is at most one path, a size and a digest: far below this
CHUNK = 1 << 20


def canonical_chunks(manifest: Manifest, chunk: int = CHUNK) -> Iterator[bytes]:
    """The canonical bytes of ``manifest``, in chunks of about ``chunk`` bytes."""
    buf: list[bytes] = []
    held = 0
    rows = ((p, e.size, e.sha256) for p, e in manifest.items())
    for text in canonical_lines(rows, manifest.extras):
        line = text.encode()
        buf.append(line)
        held += len(line)
        if held >= chunk:
            yield b"".join(buf)
            buf, held = [], 0
    for sha, ref in manifest.refs.items():  # after every file (refs/model.py)
        buf.append(ref.record(sha).encode())
    if buf:
        yield b"".join(buf)


def encode_canonical(manifest: Manifest) -> bytes:
    """gzip of the canonical form, as a commit stores it beside the JSON (schema 11,
    ``registry/canonicaldb.py``) and the manifest route serves it."""
    if manifest.extras:
        raw = b"".join(canonical_chunks(manifest))
    else:  # (the common case, in one pass: 39 against 87 ms for 100,000 files)
        lines = [f"{p}\x00{e.size}\x00{e.sha256}\n" for p, e in manifest.file_items()]
        lines += [ref.record(sha) for sha, ref in manifest.refs.items()]
        raw = "".join(lines).encode()
    return gzip.compress(raw, compresslevel=1, mtime=0)


def canonical_from_json(doc: Mapping[str, Any]) -> bytes:
    """The canonical form of a stored JSON manifest (validated and sorted at commit): what a
    version committed before schema 11 is converted with, once."""
    raw = "".join(canonical_lines(doc["files"], stored(doc))).encode()
    if "refs" in doc:  # after the files, by sha256 (refs/model.py)
        refs = refs_from_json(doc["refs"])
        raw += "".join(refs[sha].record(sha) for sha in sorted(refs)).encode()
    return raw


class CanonicalParser:
    """Feed chunks of canonical bytes; get back ``(path, size, sha256)`` per whole record
    (an extra record: ``(path, EXTRA, kind + argument)``).

    The sha256 of everything fed is kept, so ``finish`` can tell whether the bytes are
    the manifest the caller expected (its digest)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._hash = hashlib.sha256()
        self.records = 0
        self.refs: dict[str, BlobRef] = {}  # ref records (after the files), by sha256

    def feed(self, chunk: bytes) -> list[tuple[str, int, str]]:
        self._hash.update(chunk)
        buf = self._buf
        buf += chunk
        out: list[tuple[str, int, str]] = []
        pos = 0
        while True:
            if pos < len(buf) and buf[pos] == 0:  # NUL-led: a ref or an extra record
                k = buf.find(b"\x00", pos + 1)
                if k < 0:
                    break
                if buf[pos + 1 : k] == b"ref":  # NUL "ref" NUL sha NUL blocks NUL url LF
                    end = buf.find(b"\n", pos)
                    if end < 0:
                        break
                    self._ref(bytes(buf[pos:end]))
                    pos = end + 1
                    continue
                if self.refs:
                    raise InvalidInput(f"manifest record {self.records + 1}: after the refs")
                extra = self._extra(buf, pos)
                if extra is None:
                    break
                out.append(extra[0])
                self.records += 1
                pos = extra[1]
                continue
            a = buf.find(b"\x00", pos)
            if a < 0:
                break
            if self.refs:
                raise InvalidInput(f"manifest record {self.records + 1}: a file after the refs")
            b = buf.find(b"\x00", a + 1)
            if b < 0:
                break
            end = b + 65
            if len(buf) <= end:
                break
            if buf[end] != 0x0A:
                raise InvalidInput(f"manifest record {self.records + 1}: no LF after its digest")
            size = bytes(buf[a + 1 : b])
            if not size.isdigit() or (size[0] == 0x30 and len(size) > 1):
                raise InvalidInput(f"manifest record {self.records + 1}: invalid size {size!r}")
            try:
                path = buf[pos:a].decode("utf-8")
                sha = buf[b + 1 : end].decode("ascii")
            except UnicodeDecodeError:
                raise InvalidInput(f"manifest record {self.records + 1}: not UTF-8") from None
            out.append((path, int(size), sha))
            self.records += 1
            pos = end + 1
        del buf[:pos]
        if len(buf) > MAX_RECORD:
            raise InvalidInput(f"manifest record {self.records + 1} is over {MAX_RECORD} bytes")
        return out

    def _ref(self, record: bytes) -> None:
        fields = record.split(b"\x00")
        try:
            _, kind, sha, blocks, url = (f.decode("utf-8") for f in fields)
            if kind != "ref" or len(sha) != 64 or len(blocks) not in (0, 64):
                raise ValueError
        except ValueError:
            raise InvalidInput(f"manifest record {self.records + 1}: invalid ref record") from None
        if self.refs and sha <= next(reversed(self.refs)):
            raise InvalidInput(f"manifest record {self.records + 1}: refs out of order")
        self.refs[sha] = BlobRef(check_url(url), blocks or None)
        self.records += 1

    def _extra(self, buf: bytearray, pos: int) -> tuple[tuple[str, int, str], int] | None:
        """The extra record at ``pos`` and where the next starts (None: not all here yet)."""
        k = buf.find(b"\x00", pos + 1)
        p = buf.find(b"\x00", k + 1) if k >= 0 else -1
        a = buf.find(b"\x00", p + 1) if p >= 0 else -1
        if a < 0 or len(buf) <= a + 1:
            return None
        n = self.records + 1
        kind = bytes(buf[pos + 1 : k])
        if kind not in (b"x", b"l", b"d") or buf[a + 1] != 0x0A:
            raise InvalidInput(f"manifest record {n}: invalid extra record")
        try:
            path = buf[k + 1 : p].decode("utf-8")
            arg = buf[p + 1 : a].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"manifest record {n}: not UTF-8") from None
        if not path or (kind == b"l") != bool(arg):
            raise InvalidInput(f"manifest record {n}: invalid extra record")
        return (path, EXTRA, kind.decode() + arg), a + 2

    def finish(self) -> str:
        """The digest of all that was fed; an error if it ended inside a record."""
        if self._buf:
            raise InvalidInput(f"manifest ends inside record {self.records + 1}")
        return self._hash.hexdigest()


def parse_chunks(
    chunks: Iterable[bytes], parser: CanonicalParser
) -> Iterator[tuple[str, int, str]]:
    """Every record of ``chunks`` (call ``parser.finish()`` after for the digest)."""
    for chunk in chunks:
        yield from parser.feed(chunk)
