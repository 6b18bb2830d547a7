"""Alias links in an artifact directory: ``ln -s vN NAME``, ``ln -sfn``, ``rm NAME``.

A mixin of ``DraftsFS`` (``drafts_fs.py``), split from it along this seam: everything
here is about the registry's aliases shown as symlinks, nothing about drafts. How each
operation maps onto the registry is in ``drafts_fs.py``'s module docstring.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import TYPE_CHECKING

from ..errors import AlreadyExists, Conflict, InvalidInput, NotFound, NotPermitted
from ..names import LATEST, alias_name, parse_version, version_label
from .attrs import Attr
from .inodes import AliasNode, ArtifactNode, ListedDir, LocalNode, Node, VersionNode

if TYPE_CHECKING:
    from .service import ArtfsFS

log = logging.getLogger(__name__)


class PendingLinkNode(AliasNode, LocalNode):
    """``ln -sfn``'s temporary link (``CuXXXXXX``): local until renamed over the alias."""

    __slots__ = ("made",)

    def __init__(
        self, ino: int, parent: int, name: str, number: int, artifact: ArtifactNode, made: float
    ) -> None:
        super().__init__(ino, parent, name, number, artifact)
        self.made = made


PENDING_LINK_SECONDS = 2.0
_TEMP_LINK = re.compile(r"Cu[A-Za-z0-9]{6}")  # gnulib's force_symlinkat temporary name


class AliasLinks:
    """The alias-link operations of ``DraftsFS``."""

    fs: ArtfsFS

    async def _existing(self, parent: ListedDir, name: str) -> None:
        raise NotImplementedError

    async def _relist(self, parent: ListedDir, name: str) -> Node:
        raise NotImplementedError

    async def _symlink_alias(self, parent: Node, name: str, target: str) -> Attr:
        if not isinstance(parent, ArtifactNode):
            raise NotPermitted(f"symlink {name}: only aliases (in an artifact directory) are links")
        if name == LATEST:
            raise NotPermitted("'latest' is maintained by the registry")
        await self._existing(parent, name)
        alias_name(name)
        number = self._target_version(parent, target)
        if _TEMP_LINK.fullmatch(name):
            made = self.fs._clock()
            link = self.fs.table.new_local(
                lambda ino: PendingLinkNode(ino, parent.ino, name, number, parent, made)
            )
            parent.children[name] = link
            parent._changed()
            return self.fs.attr(link)
        set_alias = functools.partial(self.fs.client.set_alias, expect=None)
        await self.fs._call(
            f"set alias {name}", set_alias, parent.project, parent.artifact, name, number
        )
        return self.fs.attr(await self._relist(parent, name))

    @staticmethod
    def _target_version(artifact: ArtifactNode, target: str) -> int:
        number = parse_version(target)
        if number is None or not isinstance(
            artifact.children.get(version_label(number)), VersionNode
        ):
            raise InvalidInput(
                f"an alias must point at an existing version of "
                f"{artifact.project}/{artifact.artifact} (vN), not {target!r}"
            )
        return number

    async def _rename_alias(self, artifact: ArtifactNode, old: str, new: str, flags: int) -> None:
        if LATEST in (old, new):
            raise NotPermitted("'latest' is maintained by the registry")
        children = await self.fs._children(artifact)
        link, dst = children.get(old), children.get(new)
        if not isinstance(link, AliasNode):
            raise NotPermitted(f"rename {old}: only alias links can be renamed here")
        if flags & 2:  # RENAME_EXCHANGE
            raise NotPermitted("exchanging aliases is not supported")
        if dst is not None and flags & 1:  # RENAME_NOREPLACE
            raise AlreadyExists(f"{new} already exists")
        if dst is not None and not isinstance(dst, AliasNode):
            raise NotPermitted(f"{new} is not an alias")
        alias_name(new)
        p, a, number = artifact.project, artifact.artifact, link.number
        # moved atomically at the registry, only if nobody moved it meanwhile
        current = dst.number if isinstance(dst, AliasNode) else None
        move = functools.partial(self.fs.client.set_alias, expect=current)
        await self.fs._call(f"move alias {new}", move, p, a, new, number)
        if not isinstance(link, PendingLinkNode):  # (a pending one was never at the registry)
            remove = functools.partial(self.fs.client.delete_alias, expect=number)
            try:
                await self.fs._call(f"remove alias {old}", remove, p, a, old)
            except (NotFound, Conflict) as e:
                log.info("after moving %s/%s:%s, %s had changed: %s", p, a, new, old, e)
        # The kernel moves its dentry: ``new`` now names the link's inode, so the link node
        # itself takes the new name (and the replaced alias's inode goes).
        del artifact.children[old]
        if isinstance(dst, AliasNode):
            self.fs.table.drop(dst)
        if isinstance(link, PendingLinkNode):  # now a registry alias, under the same inode
            link = AliasNode(link.ino, artifact.ino, new, number, artifact)
            self.fs.table.replace(link)
        link.name = new
        artifact.children[new] = link
        artifact._changed()
        await self._relist(artifact, new)

    async def _publish_stale_links(self, artifact: ArtifactNode) -> None:
        """Set at the registry the pending links nobody renamed in time: wanted as they are."""
        now = self.fs._clock()
        for name, child in list(artifact.children.items()):
            if isinstance(child, PendingLinkNode) and now - child.made >= PENDING_LINK_SECONDS:
                set_alias = functools.partial(self.fs.client.set_alias, expect=None)
                await self.fs._call(
                    f"set alias {name}",
                    set_alias,
                    artifact.project,
                    artifact.artifact,
                    name,
                    child.number,
                )
                # now a registry alias under the same inode (the kernel may hold it)
                real = AliasNode(child.ino, artifact.ino, name, child.number, artifact)
                self.fs.table.replace(real)
                artifact.children[name] = real
                artifact._changed()

    async def _unlink_alias(self, artifact: ArtifactNode, link: AliasNode) -> None:
        if link.name == LATEST:
            raise NotPermitted("'latest' is maintained by the registry")
        if isinstance(link, PendingLinkNode):
            del artifact.children[link.name]
            self.fs.table.drop(link)
            artifact._changed()
            return
        remove = functools.partial(self.fs.client.delete_alias, expect=link.number)
        await self.fs._call(
            f"remove alias {link.name}", remove, artifact.project, artifact.artifact, link.name
        )
        artifact.listed_at = None
        await self.fs._children(artifact)
