"""artfs: a versioned artifact registry for machine learning, mounted as a filesystem.

This module only re-exports the public Python API (docs/python.md); the implementation is
in ``artfs.api``.
"""

from .api.draft import Draft as Draft
from .api.fileobj import VersionFile as VersionFile
from .api.registry import Registry as Registry
from .api.run import Run as Run
from .api.run import run as run
from .api.version import File as File
from .api.version import Version as Version
from .errors import AlreadyExists as AlreadyExists
from .errors import ArtfsError as ArtfsError
from .errors import Conflict as Conflict
from .errors import Forbidden as Forbidden
from .errors import IntegrityError as IntegrityError
from .errors import InvalidInput as InvalidInput
from .errors import NotFound as NotFound
from .errors import Unauthorized as Unauthorized
from .errors import Unavailable as Unavailable

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "ArtfsError",
    "Conflict",
    "Draft",
    "File",
    "Forbidden",
    "IntegrityError",
    "InvalidInput",
    "NotFound",
    "Registry",
    "Run",
    "Unauthorized",
    "Unavailable",
    "Version",
    "VersionFile",
    "__version__",
    "run",
]
