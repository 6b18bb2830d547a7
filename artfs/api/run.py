"""``artfs.run``: a record of the job itself, W&B style (docs/python.md, "Runs").

::

    with artfs.run("train-42", project="demo", job_type="train", config={"lr": 0.1}) as run:
        data = run.use("demo/mnist:latest")        # a Version, recorded as an input
        model = run.log(out_dir, "demo/model")     # published with the run's inputs

Which run: with ``$ARTFS_RUN_ID`` set (``artfs run NAME -- CMD`` sets it for CMD),
``artfs.run()`` attaches to that run instead of creating one: the command's own process
owns the run and ends it, so leaving the ``with`` block of an attached run ends nothing.
Otherwise a new run of ``project`` (or ``$ARTFS_PROJECT``, or the ``project/`` part of a
``"project/name"`` name) is created; it needs write on that project.

Liveness: the process that owns a run sends a heartbeat every quarter of the run's lease
(``$ARTFS_RUN_LEASE`` seconds, default 120) from a daemon thread; a run whose heartbeats
stop (the process was killed) reads as ``crashed`` once its lease has passed
(``artfs/runs.py``).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import sys
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import ArtfsError, Conflict, InvalidInput
from ..names import project_name
from ..runs import (
    DECLARED,
    DEFAULT_LEASE,
    FAILED,
    FINISHED,
    RunInfo,
    lease,
    run_id,
)
from .registry import Registry, input_refs
from .version import Version

if TYPE_CHECKING:
    from .draft import Draft

RUN_ID_ENV = "ARTFS_RUN_ID"
PROJECT_ENV = "ARTFS_PROJECT"
LEASE_ENV = "ARTFS_RUN_LEASE"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def _default_name() -> str:
    stem = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else ""
    return stem if stem and stem != "-c" else "run"


def run_lease() -> float:
    text = os.environ.get(LEASE_ENV)
    if not text:
        return DEFAULT_LEASE
    try:
        return lease(float(text))
    except ValueError:
        raise InvalidInput(f"${LEASE_ENV} must be a number of seconds, not {text!r}") from None


def run_project(name: str, project: str | None) -> tuple[str, str]:
    """(project, name) of a new run: ``project``, else ``$ARTFS_PROJECT``, else ``p/name``."""
    if project is None and "/" in name:
        project, name = name.split("/", 1)
    project = project or os.environ.get(PROJECT_ENV)
    if not project:
        raise InvalidInput(
            "a run needs a project: artfs.run(name, project=...), $ARTFS_PROJECT, "
            "or a name like 'project/name'"
        )
    return project_name(project), name


class Run:
    """A run: created by ``artfs.run(...)``; a context manager that ends it."""

    def __init__(
        self, registry: Registry, info: RunInfo, *, owner: bool, close_registry: bool
    ) -> None:
        self.registry = registry
        self._info = info
        self.owner = owner  # this process created the run: it beats and ends it
        self._close_registry = close_registry
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        if owner:
            self._beat = threading.Thread(
                target=self._heartbeats, name=f"artfs-run-{info.id}", daemon=True
            )
            self._beat.start()

    # --- facts ---------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._info.id

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def project(self) -> str:
        return self._info.project

    @property
    def job_type(self) -> str:
        return self._info.job_type

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._info.config)

    @property
    def status(self) -> str:
        """As last seen by this object (``refresh()`` asks the registry)."""
        return self._info.status

    @property
    def info(self) -> RunInfo:
        return self._info

    def refresh(self) -> RunInfo:
        """The registry's record now, with inputs and outputs."""
        self._info = self._call("get_run", self.id)
        return self._info

    def __repr__(self) -> str:
        return f"<artfs.Run {self.project}/{self.name} {self.id} {self.status}>"

    # --- recording -----------------------------------------------------------------------
    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        client = self.registry.client
        return self.registry._call(partial(getattr(client, method), **kwargs), *args)

    def use(self, ref: str | Version) -> Version:
        """The version ``ref`` names (resolved now), recorded as an input of the run."""
        version = ref if isinstance(ref, Version) else self.registry.version(ref)
        self._call("add_run_inputs", self.id, [version.ref], kind=DECLARED)
        return version

    def log(
        self,
        source: str | os.PathLike[str] | Draft,
        artifact: str | None = None,
        *,
        type: str | None = None,
        aliases: Sequence[str] = (),
        metadata: dict[str, Any] | None = None,
        description: str = "",
        inputs: Sequence[str | Version] = (),
    ) -> Version:
        """Publish a file or directory as a new version of ``artifact`` (``Registry.put``),
        or commit a ``Draft``, with the run's inputs (and ``inputs``) as its lineage, and
        record it as an output of the run."""
        from .draft import Draft

        known = [i.ref for i in self.refresh().inputs if not i.version.hidden]
        refs = list(dict.fromkeys([*known, *input_refs(inputs)]))
        if isinstance(source, Draft):
            if artifact is not None:
                raise InvalidInput("a draft already names its artifact")
            version = source.commit(
                aliases=aliases, metadata=metadata, description=description, inputs=refs, type=type
            )
        else:
            if artifact is None:
                raise InvalidInput("run.log(path, 'project/artifact'): which artifact?")
            version = self.registry.put(
                source,
                artifact,
                type=type,
                aliases=aliases,
                metadata=metadata,
                description=description,
                inputs=refs,
            )
        self._call("add_run_outputs", self.id, [version.ref])
        return version

    def update_config(self, **values: Any) -> dict[str, Any]:
        """Merge ``values`` into the run's config (a key's new value replaces the old)."""
        self._info = self._call("update_run", self.id, config=values)
        return self.config

    # --- ending --------------------------------------------------------------------------
    def _heartbeats(self) -> None:
        interval = self._info.lease / 4
        while not self._stop.wait(interval):
            try:
                self._call("update_run", self.id)
            except Conflict:
                return  # ended elsewhere
            except ArtfsError:
                continue  # the next beat may get through; the lease allows three misses

    def finish(self, status: str = FINISHED, exit_code: int | None = None) -> None:
        """End the run (owner only; an attached run is ended by its owner)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=60)
            self._beat = None
        try:
            if self.owner and self._info.ended is None:
                self._info = self._call("update_run", self.id, status=status, exit_code=exit_code)
        finally:
            if self._close_registry:
                self._close_registry = False
                self.registry.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Finished on a normal exit (or ``sys.exit(0)``), failed otherwise; the exception
        goes on (this never swallows it)."""
        if exc is None:
            self.finish(FINISHED)
        elif isinstance(exc, SystemExit) and exc.code in (0, None):
            self.finish(FINISHED, 0)
        elif isinstance(exc, SystemExit) and isinstance(exc.code, int):
            self.finish(FAILED, exc.code)
        else:
            with contextlib.suppress(ArtfsError):  # the job's own error matters more
                self.finish(FAILED)


def run(
    name: str | None = None,
    *,
    project: str | None = None,
    job_type: str = "",
    config: dict[str, Any] | None = None,
    registry: Registry | str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> Run:
    """Start a run, or attach to ``$ARTFS_RUN_ID``'s (module docstring). ``registry``: an
    ``artfs.Registry`` (kept open), or what ``artfs.Registry`` takes (default
    ``$ARTFS_REGISTRY``; closed when the run ends)."""
    own = not isinstance(registry, Registry)
    reg = Registry(registry, token) if not isinstance(registry, Registry) else registry
    try:
        client = reg.client
        attach = os.environ.get(RUN_ID_ENV)
        if attach:
            info: RunInfo = reg._call(client.get_run, run_id(attach))
            if project is not None and project != info.project:
                raise InvalidInput(
                    f"${RUN_ID_ENV} is run {info.id} of project {info.project}, not {project}"
                )
            if config:
                info = reg._call(partial(client.update_run, config=config), info.id)
            return Run(reg, info, owner=False, close_registry=own)
        proj, run_name = run_project(name or _default_name(), project)
        info = reg._call(
            partial(
                client.create_run,
                name=run_name,
                job_type=job_type,
                host=socket.gethostname(),
                user=_user(),
                config=config,
                lease=run_lease(),
            ),
            proj,
        )
        return Run(reg, info, owner=True, close_registry=own)
    except BaseException:
        if own:
            reg.close()
        raise
