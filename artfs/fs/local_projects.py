"""Projects made by ``mkdir MOUNT/p``: local to the mount until their first commit.

A mixin of ``DraftsFS`` (drafts_fs.py), which dispatches ``mkdir`` and ``rmdir`` in the
mount's root here. Like an artifact made by ``mkdir`` (``LocalArtifactNode``), a project
made by ``mkdir`` is created at the registry by the first commit into it (a commit creates
its project and artifact with its first version: ``publish.check_writable``), so that:

* ``rmdir MOUNT/p`` of a project nothing was committed to removes it, leaving nothing at
  the registry (``artfs ls`` never showed it) and nothing in the mount;
* a mistyped ``mkdir`` never makes a registry-wide name that only an operator can remove.

What the mount checks at ``mkdir``: the name is valid, and the registry has no project of
that name (it answers NotFound to listing its artifacts; a token that may not even read
the name gets EACCES there). Whether the token may *write* the project is only known at
the commit, which refuses it with the project named before any byte is uploaded.

A local project lives in this mount's memory; one that holds drafts is also shown after a
remount (the draft store remembers its key), an empty one is gone with the mount. Another
mount, or ``artfs put``, may create the same name at the registry meanwhile: the registry's
project then shows through the same directory (its listing wins, the local mark is kept
only while the registry answers NotFound), and ``rmdir`` refuses it like any registry
project.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..drafts.store import DraftStore
from ..errors import AlreadyExists, NotEmpty, NotFound, NotPermitted
from ..models import ArtifactInfo, ProjectInfo
from ..names import project_name
from .attrs import Attr
from .inodes import ListedDir, LocalNode, ProjectNode, RootNode

if TYPE_CHECKING:
    from .service import ArtfsFS


class LocalProjectNode(ProjectNode, LocalNode):
    """A project made with ``mkdir`` (or holding drafts) that the registry does not have yet."""

    __slots__ = ()


class LocalProjects:
    """Projects of the mount's root that only this mount has (mixed into ``DraftsFS``)."""

    fs: ArtfsFS
    store: DraftStore
    _local_projects: dict[str, float]  # made by mkdir here and not committed to: created

    async def registry_id(self) -> str:
        raise NotImplementedError

    async def _existing(self, parent: ListedDir, name: str) -> None:
        raise NotImplementedError

    async def _sync_local_projects(self, root: RootNode) -> None:
        """Add the local projects, and those of drafts kept from an earlier mount."""
        names = dict(self._local_projects)
        for draft in self.store.drafts(await self.registry_id()):
            names.setdefault(draft.key.project, draft.created)
        changed = False
        for name, created in names.items():
            if name not in root.children:
                self._add_local_project(root, name, created)
                changed = True
        if changed:
            root._changed()

    def _add_local_project(self, root: RootNode, name: str, created: float) -> LocalProjectNode:
        info = ProjectInfo(name, created)
        node = self.fs.table.new_local(lambda ino: LocalProjectNode(ino, root.ino, info))
        root.children[name] = node
        return node

    def local_project_artifacts(self, node: ProjectNode) -> list[ArtifactInfo] | None:
        """What a local project lists at the registry (nothing: its local artifacts and
        drafts are added by ``sync_local``); None if it is not local (then a NotFound from
        the registry means the project is gone)."""
        if not isinstance(node, LocalProjectNode):
            return None
        if node.project in self._local_projects or self.store.drafts(None, node.project):
            return []
        return None

    async def _mkdir_project(self, root: RootNode, name: str) -> Attr:
        await self._existing(root, name)
        project_name(name)
        try:  # the root listing may be a TTL old: ask about this name itself
            await self.fs._call(f"look up project {name}", self.fs.client.list_artifacts, name)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"{name} already exists (the registry has the project)")
        self._local_projects[name] = time.time()
        node = self._add_local_project(root, name, self._local_projects[name])
        root._changed()
        return self.fs.attr(node)

    async def _rmdir_project(self, root: RootNode, node: ProjectNode) -> None:
        """Remove a project made by mkdir and never committed to; refuse any other."""
        name = node.project
        children = await self.fs._children(node)
        if children:
            raise NotEmpty(f"{name}: it holds artifacts or drafts")
        if self.local_project_artifacts(node) is not None:
            try:  # created elsewhere meanwhile? then it is not this mount's to remove
                await self.fs._call(f"look up project {name}", self.fs.client.list_artifacts, name)
            except NotFound:
                self._local_projects.pop(name, None)
                if root.children.get(name) is node:
                    del root.children[name]
                    root._changed()
                self.fs.table.drop(node)
                return
        raise NotPermitted(
            f"rmdir {name}: the project {name} exists at the registry (something was committed "
            "to it); a mount removes only projects it made and never committed to"
        )

    def _committed_to(self, project: str) -> None:
        """A commit created the project at the registry: it is not local any more."""
        self._local_projects.pop(project, None)
