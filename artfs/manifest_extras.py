"""What a version keeps besides its files' bytes: executable bits, symlinks, empty directories.

Pure and synchronous. These are optional facts of a manifest, added so that a ``run.sh``
stays runnable, a ``current -> v2`` link inside a checkpoint directory stays a link, and
an empty ``logs/`` stays there. Backward compatibility is the design constraint:

* A manifest without any of them has exactly the JSON form, canonical bytes and digest
  it always had (``tests/test_manifest_extras.py`` pins a known digest).
* With them, the JSON form gains optional keys beside ``files`` (``executable``: paths;
  ``symlinks``: ``[[path, target], ...]``; ``dirs``: paths) and the canonical form gains
  *extra records* that start with a NUL, so no old record can be mistaken for one (a
  path is never empty): ``NUL kind NUL path NUL argument NUL LF``, with kind ``x``
  (the file ``path`` is executable; no argument), ``l`` (``path`` is a symlink to the
  argument) or ``d`` (``path`` is an empty directory; no argument). Records are in path
  order, an ``x`` record right after its file's, so a reader builds its tree in one pass.
  The digest is over those bytes as before, so the new facts are as verified as sizes
  and digests. An older client refuses such a manifest ("invalid size"): it cannot show
  them, and silently dropping them would serve a different version than was committed.

Symlinks must be relative and stay inside the version: each target is resolved as the
kernel would, from the link's own directory and through the version's other links, and
refused if it climbs above the version root (a ``../v2/x`` would reach another version
through the mount, an ``/etc/passwd`` the host). Empty directories that have entries
under them are not empty: they are dropped, so there is one canonical form.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInput
from .names import manifest_path

EXEC, LINK, DIR = "x", "l", "d"  # the kinds of extra records
MAX_TARGET_BYTES = 4095  # PATH_MAX less its NUL: what symlink(2) accepts
MAX_HOPS = 40  # links followed while resolving one target (the kernel's ELOOP limit)


@dataclass(frozen=True, slots=True)
class Extras:
    """The optional facts of a manifest (all empty for a manifest that has none)."""

    executable: frozenset[str] = frozenset()
    symlinks: Mapping[str, str] = field(default_factory=dict)  # path -> target, path order
    dirs: tuple[str, ...] = ()  # empty directories, path order

    def __bool__(self) -> bool:
        return bool(self.executable or self.symlinks or self.dirs)

    def __len__(self) -> int:
        """The entries that are not files (what counts toward the entry limit)."""
        return len(self.symlinks) + len(self.dirs)

    def to_json(self) -> dict[str, Any]:
        """The optional keys of the JSON form (none when empty: the old form exactly)."""
        out: dict[str, Any] = {}
        if self.executable:
            out["executable"] = sorted(self.executable)
        if self.symlinks:
            out["symlinks"] = [[p, t] for p, t in self.symlinks.items()]
        if self.dirs:
            out["dirs"] = list(self.dirs)
        return out

    def records(self) -> Iterator[tuple[str, str, str]]:
        """``(path, kind, argument)`` of every extra record, unsorted."""
        for path in self.executable:
            yield path, EXEC, ""
        for path, target in self.symlinks.items():
            yield path, LINK, target
        for path in self.dirs:
            yield path, DIR, ""


EMPTY = Extras()


EXTRA = -1
"""The size field of an extra record in ``merged``'s tuples (and ``CanonicalParser``'s):
its third field is then the kind (one letter) followed by the argument."""


def merged(files: Iterable[tuple[str, int, str]], extras: Extras) -> Iterator[tuple[str, int, str]]:
    """``files`` (``(path, size, sha256)`` in path order) with ``extras``' records merged in,
    in canonical order, each as ``(path, EXTRA, kind + argument)``."""
    if not extras:
        yield from files
        return
    pending = sorted(extras.records(), key=lambda r: (r[0], r[1] == EXEC))
    k = 0
    for path, size, sha in files:
        while k < len(pending) and pending[k][0] < path:
            p, kind, arg = pending[k]
            yield p, EXTRA, kind + arg
            k += 1
        yield path, size, sha
        if k < len(pending) and pending[k][0] == path:  # its x record
            yield path, EXTRA, EXEC
            k += 1
    for p, kind, arg in pending[k:]:
        yield p, EXTRA, kind + arg


def canonical_lines(files: Iterable[tuple[str, int, str]], extras: Extras) -> Iterator[str]:
    """Every canonical record of ``files`` (in path order) merged with ``extras``' records."""
    for path, size, third in merged(files, extras):
        if size == EXTRA:
            yield f"\x00{third[0]}\x00{path}\x00{third[1:]}\x00\n"
        else:
            yield f"{path}\x00{size}\x00{third}\n"


def from_json(data: Mapping[str, Any]) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """The optional keys of a JSON manifest, shape-checked (``build`` checks the rest)."""
    executable = data.get("executable", [])
    symlinks = data.get("symlinks", [])
    dirs = data.get("dirs", [])
    if isinstance(symlinks, dict):
        symlinks = list(symlinks.items())
    if not (isinstance(executable, list) and isinstance(dirs, list)):
        raise InvalidInput("invalid manifest: 'executable' and 'dirs' must be lists of paths")
    if not isinstance(symlinks, list) or not all(
        isinstance(s, list | tuple) and len(s) == 2 for s in symlinks
    ):
        raise InvalidInput("invalid manifest: 'symlinks' must be a list of [path, target]")
    return executable, [(p, t) for p, t in symlinks], dirs


def stored(data: Mapping[str, Any]) -> Extras:
    """The extras of a manifest this registry stored (validated at commit, not re-checked)."""
    if not ("executable" in data or "symlinks" in data or "dirs" in data):
        return EMPTY
    return Extras(
        frozenset(data.get("executable", ())),
        {p: t for p, t in data.get("symlinks", ())},
        tuple(data.get("dirs", ())),
    )


def check(
    files: Collection[str],
    executable: Iterable[str],
    symlinks: Iterable[tuple[str, str]],
    dirs: Iterable[str],
    *,
    limits: bool,
) -> Extras:
    """Validate the extras against the manifest's file paths (``files``)."""
    exe = frozenset(executable)
    for path in exe:
        if not isinstance(path, str) or path not in files:
            raise InvalidInput(f"executable {path!r} is not a file of this manifest")
    links: dict[str, str] = {}
    for path, target in symlinks:
        manifest_path(path, limits=limits)
        if path in files or path in links:
            raise InvalidInput(f"duplicate path {path!r} in manifest (symlink)")
        links[path] = _target(path, target)
    empty: set[str] = set()
    for path in dirs:
        manifest_path(path, limits=limits)
        if path in files or path in links:
            raise InvalidInput(f"path conflict: {path!r} is a directory and a file or symlink")
        empty.add(path)
    if not links and not empty:
        return Extras(exe) if exe else EMPTY
    parents: set[str] = set()
    for path in [*files, *links, *empty]:
        parent = path.rpartition("/")[0]
        while parent and parent not in parents:
            parents.add(parent)
            parent = parent.rpartition("/")[0]
    clash = {p for p in parents if p in files}
    if clash:
        raise InvalidInput(f"path conflict: {min(clash)!r} is a file and also a directory")
    clash = parents & links.keys()
    if clash:
        raise InvalidInput(f"path conflict: {min(clash)!r} is a symlink and also a directory")
    for path, target in links.items():
        _check_inside(path, target, links)
    return Extras(
        exe,
        dict(sorted(links.items())),
        tuple(sorted(empty - parents)),
    )


def _target(path: str, target: object) -> str:
    if not isinstance(target, str) or not target:
        raise InvalidInput(f"symlink {path!r}: its target must be a non-empty string")
    if "\x00" in target:
        raise InvalidInput(f"symlink {path!r}: its target contains NUL")
    if len(target.encode("utf-8", "surrogatepass")) > MAX_TARGET_BYTES:
        raise InvalidInput(f"symlink {path!r}: its target is over {MAX_TARGET_BYTES} bytes")
    if target.startswith("/"):
        raise InvalidInput(
            f"symlink {path!r} -> {target!r} is absolute: a version keeps only relative links "
            "that stay inside it"
        )
    return target


def _check_inside(path: str, target: str, links: Mapping[str, str]) -> None:
    """Resolve ``target`` from ``path``'s directory as the kernel would (following the
    version's own links); refuse it if it climbs above the version root."""
    parts = path.split("/")[:-1]
    pending = list(reversed(target.split("/")))
    hops = 0
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            if not parts:
                raise InvalidInput(
                    f"symlink {path!r} -> {target!r} points outside the version: a version "
                    "keeps only relative links that stay inside it"
                )
            parts.pop()
            continue
        parts.append(name)
        via = links.get("/".join(parts))
        if via is not None:
            hops += 1
            if hops > MAX_HOPS:
                raise InvalidInput(f"symlink {path!r} -> {target!r}: too many levels of links")
            parts.pop()
            pending.extend(reversed(via.split("/")))
