"""Async twins of the Python API, for trio and asyncio programs (docs/python.md)::

async with artfs.aio.Registry() as reg:
    version = await reg.version("proj/data:latest")
"""

from .api.aio import Registry as Registry
from .api.aio_run import run as run

__all__ = ["Registry", "run"]
