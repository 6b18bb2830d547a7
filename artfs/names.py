"""Names and references, parsed once into typed values.

Everything that comes from a user, a URL or the wire passes through here before
it reaches the registry core, the cache or the mount. The rules are SPEC §1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidInput

_PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ARTIFACT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION_RE = re.compile(r"v(0|[1-9][0-9]*)")
_VERSIONISH_RE = re.compile(r"v[0-9]+")
_NUMBER_RE = re.compile(r"[0-9]+")
LATEST = "latest"
MAX_ALIAS_LEN = 128
MAX_COMPONENT_BYTES = 255  # NAME_MAX: a longer component cannot be a file name on Linux
# A path inside a version is read under a prefix: MOUNT/project/artifact/vN/ in a mount,
# DEST/ for ``artfs get``. PATH_MAX (4096 with its NUL) bounds what open() takes whole;
# 512 bytes are left for the prefix (project 64 + artifact 128 + 'v' and 20 digits + 4
# slashes = 217, and up to 295 for the mountpoint or destination). docs/decisions.md.
MAX_PATH_BYTES = 4096 - 512
# Components of a path (directories + the file). Python's recursive tools die deeper:
# shutil.copytree at ~450 levels, shutil.rmtree (3.11) at ~990. docs/decisions.md.
MAX_DEPTH = 255


def project_name(name: str) -> str:
    if not isinstance(name, str) or not _PROJECT_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid project name {name!r}: use 1-64 of [A-Za-z0-9._-], starting with a letter or digit"
        )
    return name


def artifact_name(name: str) -> str:
    if not isinstance(name, str) or not _ARTIFACT_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid artifact name {name!r}: use 1-128 of [A-Za-z0-9._-], starting with a letter or digit"
        )
    return name


def alias_name(name: str, *, allow_latest: bool = False) -> str:
    """Validate an alias. ``latest`` is a valid name but only the registry may move it."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_ALIAS_LEN:
        raise InvalidInput(f"invalid alias {name!r}: must be 1-{MAX_ALIAS_LEN} characters")
    if any(c in name for c in "/:\x00") or name in (".", ".."):
        raise InvalidInput(f"invalid alias {name!r}: no '/', ':' or NUL, and not '.' or '..'")
    if _VERSIONISH_RE.fullmatch(name):
        raise InvalidInput(f"invalid alias {name!r}: names of the form v<digits> are versions")
    if _NUMBER_RE.fullmatch(name):  # the HTTP API takes a bare N for version N
        raise InvalidInput(f"invalid alias {name!r}: a bare number reads as a version (v{name})")
    if name == LATEST and not allow_latest:
        raise InvalidInput("'latest' is maintained by the registry and cannot be set by hand")
    return name


def parse_version(text: str) -> int | None:
    """``'v12'`` -> 12; anything else -> None (it may be an alias)."""
    m = _VERSION_RE.fullmatch(text)
    return int(m.group(1)) if m else None


def version_label(number: int) -> str:
    return f"v{number}"


@dataclass(frozen=True, slots=True)
class ArtifactId:
    project: str
    artifact: str

    def __str__(self) -> str:
        return f"{self.project}/{self.artifact}"


@dataclass(frozen=True, slots=True)
class Ref:
    """``project/artifact:selector``; the selector is ``vN`` or an alias (``latest`` by default)."""

    project: str
    artifact: str
    version: int | None = None
    alias: str | None = None

    @property
    def artifact_id(self) -> ArtifactId:
        return ArtifactId(self.project, self.artifact)

    @property
    def selector(self) -> str:
        if self.version is not None:
            return version_label(self.version)
        return self.alias or LATEST

    def __str__(self) -> str:
        return f"{self.project}/{self.artifact}:{self.selector}"


def parse_ref(text: str, *, default_latest: bool = True) -> Ref:
    """Parse ``p/a``, ``p/a:vN`` or ``p/a:alias``."""
    if not isinstance(text, str) or "/" not in text:
        raise InvalidInput(f"invalid reference {text!r}: expected project/artifact[:vN|:alias]")
    project, _, rest = text.partition("/")
    artifact, colon, selector = rest.partition(":")
    project_name(project)
    artifact_name(artifact)
    if not colon:
        return Ref(project, artifact, alias=LATEST if default_latest else None)
    number = parse_version(selector)
    if number is not None:
        return Ref(project, artifact, version=number)
    return Ref(project, artifact, alias=alias_name(selector, allow_latest=True))


def parse_artifact_id(text: str) -> ArtifactId:
    ref = parse_ref(text)
    if ":" in text:
        raise InvalidInput(f"expected project/artifact without a version: {text!r}")
    return ref.artifact_id


def _shown(path: str) -> str:
    """A path as error messages quote it: at most 80 characters (paths may be 10 KB)."""
    return repr(path) if len(path) <= 80 else f"{path[:80]!r}..."


def manifest_path(path: str, *, limits: bool = True) -> tuple[str, ...]:
    """Validate a path inside a version and return its components.

    Relative POSIX path of UTF-8 components, each 1-255 bytes, never ``.``/``..``,
    never NUL; no leading or trailing ``/`` and no empty components. ``limits``: also at
    most ``MAX_PATH_BYTES`` bytes and ``MAX_DEPTH`` components, what every new commit must
    meet; readers of stored versions pass False (versions committed before these limits
    stay readable) and still get every rule that keeps a path inside its version.
    """
    if not isinstance(path, str) or not path:
        raise InvalidInput("invalid path '': paths inside a version must not be empty")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"invalid path {_shown(path)}: not valid UTF-8") from None
    if limits and len(encoded) > MAX_PATH_BYTES:
        raise InvalidInput(
            f"invalid path {_shown(path)}: {len(encoded)} bytes, over the limit of {MAX_PATH_BYTES}"
        )
    if "\x00" in path:
        raise InvalidInput(f"invalid path {_shown(path)}: contains NUL")
    if path.startswith("/"):
        raise InvalidInput(f"invalid path {_shown(path)}: must be relative, not absolute")
    if limits and path.count("/") >= MAX_DEPTH:
        raise InvalidInput(
            f"invalid path {_shown(path)}: {path.count('/') + 1} levels deep, over the limit of "
            f"{MAX_DEPTH}"
        )
    parts = tuple(path.split("/"))
    for part in parts:
        if part == "":
            raise InvalidInput(
                f"invalid path {_shown(path)}: empty component (leading, trailing or '//')"
            )
        if part in (".", ".."):
            raise InvalidInput(f"invalid path {_shown(path)}: '.' and '..' are not allowed")
        size = len(part.encode("utf-8"))
        if size > MAX_COMPONENT_BYTES:
            raise InvalidInput(
                f"invalid path {_shown(path)}: a component is {size} bytes, over {MAX_COMPONENT_BYTES}"
            )
    return parts
