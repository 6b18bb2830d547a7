"""``artfs://``: the registry as an fsspec filesystem (pandas, pyarrow, Dask, HF datasets).

Paths (after ``artfs://``)::

    ""                              projects
    proj                            its artifacts
    proj/art                        its versions (proj/art:vN) and aliases (proj/art:latest),
                                    plus files written but not yet committed
    proj/art:latest/dir/x.parquet   a file of a version (any vN or alias)

Reads go through the shared verified cache (``fileobj.BlobReadFunctions``, the same code as
``Version.open``). A selector (alias) is resolved at most once per ``ALIAS_TTL`` seconds, as
the mount does; a version number never changes, and its manifest is fetched once.

Writes go to ``proj/art/dir/x.parquet`` (no selector): each file written (or ``put``) joins a
pending ``Draft`` of that artifact, and ``fs.commit()`` publishes every pending draft as a
new version; so does leaving ``with fs.transaction:`` without an error (an error discards
them). Uncommitted writes are lost when the process ends. A draft starts empty, so the new
version holds exactly what was written (``write_base="latest"`` starts from latest instead).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from fsspec.transaction import Transaction

from .. import config
from ..errors import ArtfsError, InvalidInput, IsADirectory, NotFound
from ..manifest import FileEntry, Manifest
from ..names import parse_artifact_id, parse_ref, parse_version
from ..refs.model import BlobRef
from .draft import Draft
from .fileobj import BlobReadFunctions
from .registry import Registry
from .version import Version

ALIAS_TTL = config.DEFAULT_TTL
OPEN_BLOBS = 16  # blobs cat_file keeps open between calls
FILE_INFOS = 4096  # file infos remembered (a few hundred bytes each)


@contextlib.contextmanager
def _as_os_errors() -> Iterator[None]:
    """fsspec callers expect OSError subclasses: the one translation of artfs errors here."""
    try:
        yield
    except IsADirectory as e:
        raise IsADirectoryError(str(e)) from None
    except NotFound as e:
        raise FileNotFoundError(str(e)) from None


class _Index:
    """A version's manifest with its directories: dir -> {name: FileEntry | None (a dir)}."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.dirs: dict[str, dict[str, FileEntry | None]] = {"": {}}
        for path, entry in manifest.items():
            parent, _, name = path.rpartition("/")
            self.dirs.setdefault(parent, {})[name] = entry
            while parent and parent not in self.dirs.get(parent.rpartition("/")[0], {}):
                up, _, dname = parent.rpartition("/")
                self.dirs.setdefault(up, {})[dname] = None
                self.dirs.setdefault(parent, {})
                parent = up


class ArtfsTransaction(Transaction):  # type: ignore[misc]
    """``with fs.transaction:`` commits the pending drafts on success, discards on error."""

    def complete(self, commit: bool = True) -> None:
        fs = self.fs
        super().complete(commit)
        if isinstance(fs, ArtfsFileSystem):
            if commit:
                fs.commit()
            else:
                fs.discard()


class ArtfsFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """fsspec filesystem for ``artfs://project/artifact:ref/path`` (see the module doc).

    Options (``storage_options``): ``registry`` (URL or directory; default
    ``$ARTFS_REGISTRY``), ``token``, ``cache_dir``, ``cache_size``, ``timeout``,
    ``write_base`` (None or a selector such as "latest")."""

    protocol = "artfs"
    root_marker = ""
    transaction_type = ArtfsTransaction

    def __init__(
        self,
        registry: str | None = None,
        token: str | None = None,
        cache_dir: str | None = None,
        cache_size: int | str | None = None,
        timeout: float = config.DEFAULT_TIMEOUT,
        write_base: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._registry_args: dict[str, Any] = {
            "url_or_dir": registry,
            "token": token,
            "cache_dir": cache_dir,
            "cache_size": cache_size,
            "timeout": timeout,
        }
        self.registry = Registry(**self._registry_args)
        self.write_base = write_base
        self._lock = threading.Lock()
        self._resolved: dict[tuple[str, str, str], tuple[int, float]] = {}
        self._indexes: dict[tuple[str, str, int], _Index] = {}
        self._drafts: dict[str, Draft] = {}
        self._staging: dict[str, Path] = {}
        self._open_blobs: OrderedDict[str, BlobReadFunctions] = OrderedDict()
        self._file_infos: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()

    # --- paths ---------------------------------------------------------------------------
    def _split(self, path: str) -> tuple[list[str], str | None, str]:
        """(leading components, selector or None, path inside the version)."""
        path = self._strip_protocol(path).strip("/")
        parts = path.split("/") if path else []
        if len(parts) >= 2 and ":" in parts[1]:
            artifact, _, selector = parts[1].partition(":")
            parse_ref(f"{parts[0]}/{artifact}:{selector}")
            return [parts[0], artifact], selector, "/".join(parts[2:])
        return parts, None, ""

    def _version_index(self, project: str, artifact: str, selector: str) -> tuple[int, _Index]:
        ref = parse_ref(f"{project}/{artifact}:{selector}")
        number = ref.version
        if number is None:
            key = (project, artifact, selector)
            with self._lock:
                hit = self._resolved.get(key)
            if hit is not None and time.monotonic() - hit[1] < ALIAS_TTL:
                number = hit[0]
            else:
                number = self.registry.version(str(ref)).number
                with self._lock:
                    self._resolved[key] = (number, time.monotonic())
        ikey = (project, artifact, number)
        with self._lock:
            index = self._indexes.get(ikey)
        if index is None:
            index = _Index(self.registry._manifest(project, artifact, number))
            with self._lock:
                self._indexes[ikey] = index
        return number, index

    # --- reading -------------------------------------------------------------------------
    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        with _as_os_errors():
            entries = self._ls(path)
        return entries if detail else [e["name"] for e in entries]

    def _ls(self, path: str) -> list[dict[str, Any]]:
        parts, selector, inner = self._split(path)
        if selector is not None:
            project, artifact = parts
            _, index = self._version_index(project, artifact, selector)
            base = f"{project}/{artifact}:{selector}"
            if inner in index.dirs:
                prefix = f"{base}/{inner}" if inner else base
                refs = index.manifest.refs
                return [
                    _entry(f"{prefix}/{name}", item, refs)
                    for name, item in sorted(index.dirs[inner].items())
                ]
            entry = index.manifest.get(inner)
            if entry is None:
                raise NotFound(f"{base}: no file or directory {inner!r}")
            return [_entry(f"{base}/{inner}", entry, index.manifest.refs)]
        if not parts:
            return [_dir(p) for p in self.registry.projects()]
        if len(parts) == 1:
            return [_dir(a) for a in self.registry.artifacts(parts[0])]
        key = f"{parts[0]}/{parts[1]}"
        pending = self._pending_ls(key, "/".join(parts[2:]))
        if len(parts) > 2:
            if pending is None:
                raise NotFound(f"{path}: not written (name a version: {key}:latest/...)")
            return pending
        aid = parse_artifact_id(key)
        try:
            info = self.registry._call(self.registry.client.get_artifact, aid.project, aid.artifact)
        except NotFound:
            if pending is None:
                raise
            return pending  # written, never committed yet
        names = [f"{key}:v{v.number}" for v in info.versions]
        names += [f"{key}:{alias}" for alias in sorted(info.aliases)]
        return [_dir(n) for n in names] + (pending or [])

    def _pending_ls(self, key: str, inner: str) -> list[dict[str, Any]] | None:
        with self._lock:
            draft = self._drafts.get(key)
            paths = draft.paths() if draft else []
            size = draft.size_of(inner) if draft and inner in paths else 0
        if inner:
            if inner in paths:
                return [{"name": f"{key}/{inner}", "type": "file", "size": size}]
            paths = [p[len(inner) + 1 :] for p in paths if p.startswith(inner + "/")]
            if not paths:
                return None
        children = sorted({p.split("/", 1)[0] for p in paths})
        prefix = f"{key}/{inner}" if inner else key
        return [
            {"name": f"{prefix}/{c}", "type": "file" if c in paths else "directory", "size": 0}
            for c in children
        ]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        with _as_os_errors():
            parts, selector, inner = self._split(path)
            if selector is None:
                if len(parts) <= 2:
                    return _dir("/".join(parts))
                entries = self._pending_ls("/".join(parts[:2]), "/".join(parts[2:]))
                if entries is None:
                    raise NotFound(f"{path}: not written (name a version to read)")
                if len(entries) == 1 and entries[0]["name"] == "/".join(parts):
                    return entries[0]
                return _dir("/".join(parts))
            project, artifact = parts
            _, index = self._version_index(project, artifact, selector)
            name = f"{project}/{artifact}:{selector}" + (f"/{inner}" if inner else "")
            if inner in index.dirs:
                return _dir(name)
            entry = index.manifest.get(inner)
            if entry is None:
                raise NotFound(f"{name}: no such file or directory")
            return _entry(name, entry, index.manifest.refs)

    def _file(self, path: str) -> dict[str, Any]:
        """``info`` of a file of a version, remembered (a version's files never change; a
        path through an alias for ``ALIAS_TTL``): a ranged ``cat_file`` of a cached blob
        is then a dict lookup and a ``pread``."""
        now = time.monotonic()
        hit = self._file_infos.get(path)  # (a dict read is atomic; writes take the lock)
        if hit is not None and now < hit[1]:
            return hit[0]
        info = self.info(path)
        if info["type"] != "file" or "sha256" not in info:
            raise IsADirectoryError(f"{path}: not a file of a version")
        _, selector, _ = self._split(path)
        numbered = selector is not None and parse_version(selector) is not None
        with self._lock:
            self._file_infos[path] = (info, float("inf") if numbered else now + ALIAS_TTL)
            if len(self._file_infos) > FILE_INFOS:
                self._file_infos.popitem(last=False)
        return info

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """Bytes ``[start, end)`` of a file (negative: from the end), verified.

        The blobs of the last ``OPEN_BLOBS`` calls stay open: opening costs two trips to
        the loop thread, several times a cached 64 KiB range (scripts/bench_python.py). A
        caller takes the blob's reader out of the table while it reads, so another thread
        never closes it under the read (it opens its own meanwhile)."""
        info = self._file(path)
        size = info["size"]
        start = 0 if start is None else (max(0, size + start) if start < 0 else start)
        end = size if end is None else (max(0, size + end) if end < 0 else min(end, size))
        sha = info["sha256"]
        with self._lock:
            reads = self._open_blobs.pop(sha, None)
        if reads is None:
            reads = self._reads(info)
        try:
            return reads.read_at(start, end - start) if end > start else b""
        except NotFound as e:
            raise FileNotFoundError(str(e)) from None
        finally:
            with self._lock:
                extra = self._open_blobs.pop(sha, None)  # opened by another thread meanwhile
                self._open_blobs[sha] = reads
                if extra is None and len(self._open_blobs) > OPEN_BLOBS:
                    extra = self._open_blobs.popitem(last=False)[1]
            if extra is not None:
                extra.close()

    def _reads(self, info: dict[str, Any]) -> BlobReadFunctions:
        portal, session = self.registry._session()
        with _as_os_errors():
            return BlobReadFunctions(
                portal, session, info["sha256"], int(info["size"]), self.registry.read_timeout
            )

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: Any = None,
        autocommit: bool = True,
        cache_options: Any = None,
        **kwargs: Any,
    ) -> Any:
        if mode == "rb":
            info = self._file(path)
            kwargs.setdefault("cache_type", "none")  # the blob cache is the cache
            return ArtfsFile(self, info, block_size or "default", cache_options, **kwargs)
        if mode == "wb":
            return ArtfsWriteFile(self, path, block_size or "default", autocommit, **kwargs)
        raise InvalidInput(f"artfs:// files open as 'rb' or 'wb', not {mode!r}")

    # --- writing -------------------------------------------------------------------------
    def _draft_target(self, path: str) -> tuple[Draft, str, Path]:
        """The pending draft a write to ``path`` goes to, the path inside it, its staging dir."""
        parts, selector, _ = self._split(path)
        if selector is not None:
            raise PermissionError(f"{path}: versions are read-only; write to project/artifact/...")
        if len(parts) < 3:
            raise InvalidInput(f"{path}: write to project/artifact/path")
        key = f"{parts[0]}/{parts[1]}"
        with self._lock:
            draft = self._drafts.get(key)
        if draft is None:
            with _as_os_errors():
                draft = self.registry.draft(key, base=self._base(key))
            with self._lock:
                draft = self._drafts.setdefault(key, draft)
                staging = self._staging.setdefault(
                    key, Path(tempfile.mkdtemp(prefix="artfs-fsspec-"))
                )
        else:
            staging = self._staging[key]
        return draft, "/".join(parts[2:]), staging

    def _base(self, key: str) -> str | None:
        if self.write_base is None:
            return None
        try:
            self.registry.version(f"{key}:{self.write_base}")
        except NotFound:
            return None  # a new artifact: nothing to start from
        return self.write_base

    def _add(self, draft: Draft, inner: str, source: Path) -> None:
        with self._lock:
            draft.add_file(source, inner)

    def put_file(self, lpath: str, rpath: str, callback: Any = None, **kwargs: Any) -> None:
        """Add a local file to the pending draft (read when it is committed: keep it)."""
        if Path(lpath).is_dir():
            return  # directories exist through their files
        draft, inner, _ = self._draft_target(rpath)
        self._add(draft, inner, Path(lpath))

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Directories exist through their files: nothing to do for a pending draft."""
        _, selector, _ = self._split(path)
        if selector is not None:
            raise PermissionError(f"{path}: versions are read-only")

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.mkdir(path)

    def rm_file(self, path: str) -> None:
        draft, inner, _ = self._draft_target(path)
        with self._lock, _as_os_errors():
            draft.remove(inner)

    def commit(
        self,
        artifact: str | None = None,
        *,
        aliases: tuple[str, ...] | list[str] = (),
        metadata: dict[str, Any] | None = None,
        description: str = "",
        inputs: tuple[str, ...] | list[str] = (),
    ) -> dict[str, Version]:
        """Publish the pending drafts (or only ``artifact``'s) as new versions."""
        with self._lock:
            keys = [k for k in self._drafts if artifact is None or k == artifact]
        done: dict[str, Version] = {}
        for key in keys:
            draft = self._drafts[key]
            done[key] = draft.commit(
                aliases=aliases, metadata=metadata, description=description, inputs=inputs
            )
            self._forget(key)
        self.invalidate_cache()
        return done

    def discard(self, artifact: str | None = None) -> None:
        """Drop the pending drafts (or only ``artifact``'s) without publishing anything."""
        with self._lock:
            keys = [k for k in self._drafts if artifact is None or k == artifact]
        for key in keys:
            self._forget(key)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._drafts.pop(key, None)
            staging = self._staging.pop(key, None)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)

    def invalidate_cache(self, path: str | None = None) -> None:
        with self._lock:
            self._resolved.clear()
            self._file_infos.clear()
        super().invalidate_cache(path)

    def close(self) -> None:
        """Close the blobs ``cat_file`` keeps open and release the registry (the instance
        stays cached by fsspec; a later call opens it again)."""
        with self._lock:
            blobs = list(self._open_blobs.values())
            self._open_blobs.clear()
        for reads in blobs:
            reads.close()
        self.registry.close()
        self.registry = Registry(**self._registry_args)


def _dir(name: str) -> dict[str, Any]:
    return {"name": name, "type": "directory", "size": 0}


def _entry(name: str, item: FileEntry | None, refs: Mapping[str, BlobRef]) -> dict[str, Any]:
    """A file's fsspec info; an external reference also has ``url`` (where its bytes stay,
    as ``File.url`` in the Python API)."""
    if item is None:
        return _dir(name)
    entry = {"name": name, "type": "file", "size": item.size, "sha256": item.sha256}
    ref = refs.get(item.sha256)
    if ref is not None:
        entry["url"] = ref.url
    return entry


class ArtfsFile(AbstractBufferedFile):  # type: ignore[misc]
    """A file of a version opened through fsspec; ranges come from the shared cache."""

    def __init__(
        self,
        fs: ArtfsFileSystem,
        info: dict[str, Any],
        block_size: Any,
        cache_options: Any,
        **kwargs: Any,
    ) -> None:
        self._reads = fs._reads(info)
        super().__init__(
            fs,
            info["name"],
            "rb",
            block_size=block_size,
            cache_options=cache_options,
            size=int(info["size"]),
            **kwargs,
        )
        self.details = info

    def _fetch_range(self, start: int, end: int) -> bytes:
        with _as_os_errors():
            return self._reads.read_at(start, end - start)

    def readinto(self, b: Any) -> int:
        """Straight into the caller's buffer when the blob is complete in the cache (no
        intermediate bytes: 0.54 -> see docs/performance.md), else through fsspec's read."""
        if self._reads.fd is None or self.closed:
            return int(super().readinto(b))
        n = self._reads.readinto_at(self.loc, memoryview(b).cast("B"))
        self.loc += n
        return n

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._reads.close()


class ArtfsWriteFile(AbstractBufferedFile):  # type: ignore[misc]
    """A file being written into a pending draft: spooled to a local staging file, which
    joins the draft when closed."""

    def __init__(
        self, fs: ArtfsFileSystem, path: str, block_size: Any, autocommit: bool, **kwargs: Any
    ) -> None:
        self._draft, self._inner, staging = fs._draft_target(path)
        self._spool = tempfile.NamedTemporaryFile(dir=staging, delete=False)  # noqa: SIM115
        super().__init__(fs, path, "wb", block_size=block_size, autocommit=autocommit, **kwargs)

    def _initiate_upload(self) -> None:
        pass

    def _upload_chunk(self, final: bool = False) -> bool:
        self.buffer.seek(0)
        shutil.copyfileobj(self.buffer, self._spool)
        if final:
            self._spool.close()
            assert isinstance(self.fs, ArtfsFileSystem)
            self.fs._add(self._draft, self._inner, Path(self._spool.name))
        return True

    def commit(self) -> None:
        """(In a transaction: the file is already in its draft, which the transaction commits.)"""

    def discard(self) -> None:
        with contextlib.suppress(ArtfsError, OSError):
            self._draft.remove(self._inner)


__all__ = ["ArtfsFile", "ArtfsFileSystem", "ArtfsTransaction"]
