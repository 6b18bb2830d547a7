"""The daemon's side of a commit request (``setxattr user.artfs.commit`` on a draft).

The mount's setxattr handler calls ``handle_commit_request`` and lets any
error become the errno; the request's progress and result land in the state
directory for ``artfs commit`` (see ``requests.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..client.base import RegistryClient
from ..errors import ArtfsError
from .commit import CommitCache, CommitOutcome, commit_draft
from .requests import CommitRequest, RequestFiles
from .store import DraftStore

PROGRESS_INTERVAL = 0.2


async def handle_commit_request(
    value: bytes,
    *,
    client: RegistryClient,
    cache: CommitCache | None,
    store: DraftStore,
    draft_id: int,
    creator: str = "",
    observed: Sequence[str] = (),
) -> CommitOutcome:
    """``observed``: the inputs the mount observed for the draft (committed as such unless
    the request says ``"observed": false``)."""
    files = RequestFiles(store.state_dir)
    files.prune()  # results no CLI came back for
    try:
        request = CommitRequest.parse(value)
    except ArtfsError as e:
        request_id = CommitRequest.request_id(value)
        if request_id is not None:
            files.write_failure(request_id, e)
        raise
    rid = request.request
    key = store.get_draft(draft_id).key
    last = 0.0

    def progress(phase: str, done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if rid is not None and (now - last >= PROGRESS_INTERVAL or done >= total):
            last = now
            files.write_progress(rid, phase, done, total)

    try:
        outcome = await commit_draft(
            client,
            cache,
            store,
            draft_id,
            aliases=request.aliases,
            metadata=request.metadata,
            description=request.description,
            type=request.type,
            creator=creator,
            progress=progress,
            inputs=request.inputs,
            observed_inputs=tuple(observed) if request.observed else (),
            tags=request.tags,
            ttl=request.ttl,
            allow_duplicate=request.allow_duplicate,
            allow_empty=request.allow_empty,
        )
    except ArtfsError as e:
        if rid is not None:
            files.write_failure(rid, e)
        raise
    except Exception as e:
        if rid is not None:
            files.write_failure(rid, ArtfsError(f"internal error: {e!r}"))
        raise
    files.write_committed(f"{key.project}/{key.artifact}/{key.name}", outcome.ref)
    if rid is not None:
        files.write_success(
            rid, outcome.ref, outcome.result.created, outcome.uploaded, outcome.recovered
        )
    return outcome
