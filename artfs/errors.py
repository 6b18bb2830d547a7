"""The one exception hierarchy of artfs.

Every layer raises these; each boundary translates them exactly once:
the HTTP server maps ``code`` to a status (``server/api.py``), the HTTP client
maps a status+code back to the class (``client/http.py``), the FUSE adapter maps
the class to an errno (``fs/fuse_ops.py``) and the CLI prints ``str(exc)``.
"""

from __future__ import annotations

import errno as _errno


class ArtfsError(Exception):
    """Base class. ``code`` is the stable wire name, ``errno`` the POSIX view."""

    code = "error"
    http_status = 500
    errno = _errno.EIO

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(ArtfsError):
    """A name, path, reference, manifest or request body that breaks the rules."""

    code = "invalid"
    http_status = 400
    errno = _errno.EINVAL


class NotFound(ArtfsError):
    code = "not_found"
    http_status = 404
    errno = _errno.ENOENT


class AlreadyExists(ArtfsError):
    code = "exists"
    http_status = 409
    errno = _errno.EEXIST


class Conflict(ArtfsError):
    """A conditional update whose precondition no longer holds, or a refused state change."""

    code = "conflict"
    http_status = 409
    errno = _errno.EBUSY


class BeingCollected(Conflict):
    """A blob that a running garbage collection is deleting: upload it again in a moment and
    commit again (``publish.upload_and_commit`` does so by itself)."""

    code = "being_collected"


class PreconditionFailed(Conflict):
    """An alias move conditional on the current target found another target."""

    code = "precondition_failed"
    http_status = 412


class NotPermitted(ArtfsError):
    """The operation can never be done on this object (e.g. moving ``latest`` by hand)."""

    code = "not_permitted"
    http_status = 403
    errno = _errno.EPERM


class ProtectedAlias(NotPermitted):
    """A protected alias (``artfs alias protect``) moved or removed without an admin token."""

    code = "protected"


class Unauthorized(ArtfsError):
    """No token, or a token the registry doesn't know (unknown, revoked): HTTP 401."""

    code = "unauthorized"
    http_status = 401
    errno = _errno.EACCES


class Forbidden(ArtfsError):
    """A valid token without the right this request needs (read or write on a project)."""

    code = "forbidden"
    http_status = 403
    errno = _errno.EACCES


class NoAttribute(NotFound):
    """An extended attribute that this object does not carry (ENODATA, what getxattr expects)."""

    code = "no_attribute"
    errno = _errno.ENODATA


class Unsupported(ArtfsError):
    """An operation this implementation does not offer at all (ENOSYS: the kernel stops asking)."""

    code = "unsupported"
    http_status = 501
    errno = _errno.ENOSYS


class NotKept(Unsupported):
    """Something this object does not keep, asked of it alone (EOPNOTSUPP: an ACL or xattr
    on a draft file). Not ENOSYS, which would make the kernel refuse every later setxattr
    of the mount, ``user.artfs.commit`` included; ``cp -a``/``rsync -a`` go on past it."""

    code = "not_kept"
    errno = _errno.EOPNOTSUPP


class NotEmpty(Conflict):
    """A directory that still has entries (rmdir, rename over it): ENOTEMPTY."""

    code = "not_empty"
    errno = _errno.ENOTEMPTY


class IsADirectory(InvalidInput):
    """A file operation on a directory (EISDIR)."""

    code = "is_a_directory"
    errno = _errno.EISDIR


class NotADirectory(InvalidInput):
    """A directory operation on a file, or a file used as a path component (ENOTDIR)."""

    code = "not_a_directory"
    errno = _errno.ENOTDIR


class CrossDevice(NotPermitted):
    """A rename between two places that cannot share data (two drafts): EXDEV, so ``mv`` copies."""

    code = "cross_device"
    errno = _errno.EXDEV


class ReadOnly(ArtfsError):
    code = "read_only"
    http_status = 405
    errno = _errno.EROFS


class IntegrityError(ArtfsError):
    """Bytes that do not match their sha256: an upload, a download or cached data at rest."""

    code = "integrity"
    http_status = 422
    errno = _errno.EIO


class Unavailable(ArtfsError):
    """The registry (or blob store) could not be reached in time."""

    code = "unavailable"
    http_status = 503
    errno = _errno.EIO


class TooSlow(ArtfsError):
    """A request body that arrives slower than the server accepts (server/limits.py): 408."""

    code = "too_slow"
    http_status = 408
    errno = _errno.ETIMEDOUT


class StorageFull(ArtfsError):
    """No space left where the registry, a cache or a draft keeps its data: HTTP 507."""

    code = "storage_full"
    http_status = 507
    errno = _errno.ENOSPC


class ProtocolError(ArtfsError):
    """The peer answered something this version of artfs does not understand."""

    code = "protocol"
    http_status = 502
    errno = _errno.EIO


ALL_ERRORS: tuple[type[ArtfsError], ...] = (
    ArtfsError,
    InvalidInput,
    NotFound,
    AlreadyExists,
    Conflict,
    BeingCollected,
    PreconditionFailed,
    NotPermitted,
    ProtectedAlias,
    Unauthorized,
    Forbidden,
    NoAttribute,
    Unsupported,
    NotKept,
    NotEmpty,
    IsADirectory,
    NotADirectory,
    CrossDevice,
    ReadOnly,
    IntegrityError,
    Unavailable,
    TooSlow,
    StorageFull,
    ProtocolError,
)

BY_CODE: dict[str, type[ArtfsError]] = {cls.code: cls for cls in ALL_ERRORS}


def from_code(code: str, message: str) -> ArtfsError:
    """Rebuild an error received over the wire; unknown codes become ``ArtfsError``."""
    return BY_CODE.get(code, ArtfsError)(message)
