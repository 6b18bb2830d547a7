"""The answers to ``getxattr``/``listxattr`` of versions and their files (SPEC §2): which
names each node has and their values, some from the version's record (fetched on demand,
aliases and tags refreshed like listings). The text forms are ``xattrs.py``'s; setting
attributes is the write side's (``service.py``, ``drafts_fs.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import NoAttribute, Unsupported
from ..models import OBSERVED
from . import xattrs
from .inodes import ArtifactNode, FileNode, Node, TreeLinkNode, VersionNode

if TYPE_CHECKING:
    from .service import ArtfsFS


class XattrAnswers:
    def __init__(self, fs: ArtfsFS) -> None:
        self.fs = fs

    def names(self, node: Node) -> tuple[str, ...]:
        if not self.fs.options.xattrs:
            raise Unsupported("extended attributes are off for this mount (mount with --xattrs)")
        if isinstance(node, VersionNode):
            return xattrs.VERSION_NAMES
        if isinstance(node, FileNode) and not isinstance(node, TreeLinkNode):
            return xattrs.FILE_NAMES
        return ()

    async def get(self, node: Node, name: str) -> bytes:
        if name not in self.names(node):
            raise NoAttribute(f"no attribute {name}")
        if isinstance(node, FileNode):
            return self._file(node, name)
        assert isinstance(node, VersionNode)
        return await self._version(node, name)

    def _file(self, node: FileNode, name: str) -> bytes:
        if name == xattrs.SHA256:
            return xattrs.text(node.sha256)
        if name == xattrs.CACHED:
            return xattrs.text(str(self.fs.cache.cached_bytes(node.sha256, node.size)))
        if name == xattrs.REF:
            return xattrs.text(node.version.key.ref)
        if name == xattrs.PATH:
            return xattrs.text(self.fs.table.path_in_version(node))
        return xattrs.text(str(node.size))

    async def _version(self, node: VersionNode, name: str) -> bytes:
        summary = node.summary
        if name == xattrs.REF:
            return xattrs.text(node.key.ref)
        if name == xattrs.DIGEST:
            return xattrs.text(summary.digest)
        if name == xattrs.CREATED:
            return xattrs.timestamp(summary.created)
        artifact = self.fs.table.get(node.parent)
        assert isinstance(artifact, ArtifactNode)
        if name == xattrs.ALIASES:
            await self.fs._fresh(artifact)
            number = node.key.number
            return xattrs.alias_list([a for a, n in artifact.aliases.items() if n == number])
        if name == xattrs.TYPE:
            return xattrs.text(artifact.artifact_type)
        info = await self.fs.version_info(node)
        if name == xattrs.METADATA:
            return xattrs.metadata_json(info.metadata)
        if name == xattrs.INPUTS:
            return xattrs.ref_list([i.ref for i in info.inputs])
        if name == xattrs.OBSERVED_INPUTS:
            return xattrs.ref_list([i.ref for i in info.inputs if i.kind == OBSERVED])
        if name == xattrs.TAGS:
            return xattrs.alias_list(list(info.tags))
        return xattrs.text(info.description)
