"""Runs: records of the jobs that use and make versions (pure: values, rules, limits).

A run belongs to one project (it needs write on it to be created or changed; read to be
seen). It has a random id (``secrets.token_hex(8)``: unique, unguessable) and a display
name that need not be unique, as in W&B. Its *inputs* are versions it used, each
``declared`` (``run.use(ref)``) or ``observed`` (read through a mount, see ``cli_runs``);
its *outputs* are versions it logged. Both are resolved to exact versions (and digests)
when recorded, as a commit's lineage inputs are.

Liveness: a running run has a *lease* (seconds, chosen by its creator); its process sends
a heartbeat every quarter of it. A run still ``running`` whose last heartbeat is older
than its lease is shown as ``crashed`` (``effective_status``): the process died without
saying so (SIGKILL, a lost node). Nothing is rewritten in the store for that, so a run
that was only slow comes back to ``running`` with its next heartbeat, and may still end.
Ending is once: ``finished``, ``failed`` or ``crashed`` are final.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .errors import InvalidInput, ProtocolError
from .models import HIDDEN_INPUT, VersionInput

RUNNING, FINISHED, FAILED, CRASHED = "running", "finished", "failed", "crashed"
STATUSES = (RUNNING, FINISHED, FAILED, CRASHED)
FINAL = (FINISHED, FAILED, CRASHED)
DECLARED, OBSERVED = "declared", "observed"
INPUT_KINDS = (DECLARED, OBSERVED)

MAX_RUN_NAME = 256
MAX_JOB_TYPE = 128
MAX_HOST_USER = 256
MAX_CONFIG_BYTES = 64 * 1024  # a config is hyperparameters, not data (docs/decisions.md)
MAX_RUN_INPUTS = 10_000  # inputs of one run, and outputs: each bound separately
MAX_RUN_REFS_PER_CALL = 1_000
MAX_LIST_RUNS = 1_000
DEFAULT_LEASE = 120.0  # seconds without a heartbeat before a running run reads as crashed
MIN_LEASE, MAX_LEASE = 1.0, 7 * 86400.0
RUN_ID_CHARS = 16


def new_run_id() -> str:
    return secrets.token_hex(RUN_ID_CHARS // 2)


def run_id(value: Any) -> str:
    """A run id as given by a caller (path parameter, ``ARTFS_RUN_ID``): 16 hex digits."""
    if (
        not isinstance(value, str)
        or len(value) != RUN_ID_CHARS
        or any(c not in "0123456789abcdef" for c in value)
    ):
        raise InvalidInput(f"invalid run id {value!r}: expected {RUN_ID_CHARS} hex digits")
    return value


def _bounded_text(value: Any, what: str, limit: int, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"run {what} must be a string")
    if not empty and not value:
        raise InvalidInput(f"run {what} must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > limit:
        raise InvalidInput(f"run {what} is longer than {limit} bytes")
    if not value.isprintable():
        raise InvalidInput(f"run {what} {value!r} contains control characters")
    return value


def run_name(value: Any) -> str:
    return _bounded_text(value, "name", MAX_RUN_NAME, empty=False)


def job_type(value: Any) -> str:
    return _bounded_text(value, "job type", MAX_JOB_TYPE)


def host_or_user(value: Any, what: str) -> str:
    return _bounded_text(value, what, MAX_HOST_USER)


def config_json(config: Any) -> str:
    """A run's config as stored: a JSON object of at most ``MAX_CONFIG_BYTES``."""
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise InvalidInput("run config must be a JSON object (a dict)")
    try:
        text = json.dumps(config, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"run config is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidInput("run config is nested too deeply") from None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise InvalidInput(
            f"run config is larger than {MAX_CONFIG_BYTES} bytes: keep hyperparameters there "
            "and log data as a version"
        )
    return text


def lease(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput("run lease must be a number of seconds")
    if not MIN_LEASE <= float(value) <= MAX_LEASE:
        raise InvalidInput(f"run lease must be between {MIN_LEASE:g} and {MAX_LEASE:g} seconds")
    return float(value)


def end_status(value: Any) -> str:
    if value not in FINAL:
        raise InvalidInput(f"a run ends as one of {', '.join(FINAL)}, not {value!r}")
    return str(value)


def input_kind(value: Any) -> str:
    if value not in INPUT_KINDS:
        raise InvalidInput(f"a run input is {' or '.join(INPUT_KINDS)}, not {value!r}")
    return str(value)


def exit_code(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not -256 < value < 65536:
        raise InvalidInput(f"invalid exit code {value!r}")
    return value


def effective_status(status: str, heartbeat: float, lease_s: float, now: float) -> str:
    """What a run's status reads as at ``now``: a running run silent past its lease crashed."""
    if status == RUNNING and now > heartbeat + lease_s:
        return CRASHED
    return status


@dataclass(frozen=True, slots=True)
class RunInput:
    version: VersionInput
    kind: str = DECLARED

    @property
    def ref(self) -> str:
        return self.version.ref

    def to_json(self) -> dict[str, Any]:
        return {**self.version.to_json(), "kind": self.kind}

    @classmethod
    def from_json(cls, d: Any) -> RunInput:
        try:
            return cls(VersionInput.from_json(d), input_kind(d.get("kind", DECLARED)))
        except (InvalidInput, AttributeError) as e:
            raise ProtocolError(f"malformed run input: {e}") from None


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run. ``inputs``/``outputs`` are filled by a single-run lookup; listings leave
    them empty and give ``input_count``/``output_count``. ``status`` is effective (a
    running run silent past its lease reads ``crashed``)."""

    id: str
    project: str
    name: str
    job_type: str
    host: str
    user: str
    started: float
    ended: float | None
    heartbeat: float
    lease: float
    status: str
    exit_code: int | None
    config: dict[str, Any]
    input_count: int = 0
    output_count: int = 0
    inputs: tuple[RunInput, ...] = ()
    outputs: tuple[VersionInput, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name} ({self.id})"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project": self.project,
            "name": self.name,
            "job_type": self.job_type,
            "host": self.host,
            "user": self.user,
            "started": self.started,
            "ended": self.ended,
            "heartbeat": self.heartbeat,
            "lease": self.lease,
            "status": self.status,
            "exit_code": self.exit_code,
            "config": self.config,
            "input_count": self.input_count,
            "output_count": self.output_count,
            "inputs": [i.to_json() for i in self.inputs],
            "outputs": [o.to_json() for o in self.outputs],
        }

    @classmethod
    def from_json(cls, d: Any) -> RunInfo:
        try:
            ended, code = d.get("ended"), d.get("exit_code")
            return cls(
                str(d["id"]),
                str(d["project"]),
                str(d["name"]),
                str(d["job_type"]),
                str(d["host"]),
                str(d["user"]),
                float(d["started"]),
                None if ended is None else float(ended),
                float(d["heartbeat"]),
                float(d["lease"]),
                str(d["status"]),
                None if code is None else int(code),
                dict(d["config"]),
                int(d.get("input_count", 0)),
                int(d.get("output_count", 0)),
                tuple(RunInput.from_json(i) for i in d.get("inputs", [])),
                tuple(VersionInput.from_json(o) for o in d.get("outputs", [])),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProtocolError(f"malformed run record: {e}") from None


def visible_run(run: RunInfo, can_read: Callable[[str], bool]) -> RunInfo:
    """``run`` as a reader of only the projects ``can_read`` accepts sees it: inputs and
    outputs in other projects become hidden entries (as a version's inputs do)."""
    inputs = tuple(
        i if i.version.hidden or can_read(i.version.project) else RunInput(HIDDEN_INPUT, i.kind)
        for i in run.inputs
    )
    outputs = tuple(o if o.hidden or can_read(o.project) else HIDDEN_INPUT for o in run.outputs)
    return replace(run, inputs=inputs, outputs=outputs)


@dataclass(frozen=True, slots=True)
class VersionRuns:
    """The runs around one version: those that logged it, those that used it."""

    produced_by: tuple[RunInfo, ...]
    used_by: tuple[RunInfo, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "produced_by": [r.to_json() for r in self.produced_by],
            "used_by": [r.to_json() for r in self.used_by],
        }

    @classmethod
    def from_json(cls, d: Any) -> VersionRuns:
        try:
            return cls(
                tuple(RunInfo.from_json(r) for r in d["produced_by"]),
                tuple(RunInfo.from_json(r) for r in d["used_by"]),
            )
        except (KeyError, TypeError) as e:
            raise ProtocolError(f"malformed version runs: {e}") from None
