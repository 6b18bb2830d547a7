"""The registry server: the JSON API (Hypercorn + Starlette) and the blob data server,
both in one trio loop.

``serve_command`` is what ``artfs serve`` and ``python -m artfs.server`` run (one parser:
``add_serve_arguments``); tests start
it with port 0 and learn the bound ports from ``task_status`` (a ``ServerInfo``).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import signal
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from starlette.requests import Request

from ..errors import InvalidInput
from ..heap import freeze_startup_heap
from ..registry.blobs import BlobWriter
from ..registry.stores import (
    StoreOptions,
    add_store_arguments,
    describe_stores,
    open_registry,
    store_options,
)
from .api import create_app
from .auth import DEFAULT_TTL, Authenticator
from .blobserver import IDLE_TIMEOUT, BlobDataServer
from .integrity import (
    IntegrityOptions,
    IntegrityService,
    add_integrity_arguments,
    integrity_options,
)
from .limits import (
    DEFAULT_LIMITS,
    READ_TIMEOUT,
    RequestCap,
    ServerLimits,
    add_limit_arguments,
    limit_options,
    return_freed_memory,
)
from .signing import DEFAULT_LIFETIME, UrlSigner, read_gate

__all__ = [
    "AuthOptions",
    "IntegrityOptions",
    "ServerInfo",
    "ServerLimits",
    "StoreOptions",
    "add_auth_arguments",
    "add_integrity_arguments",
    "add_limit_arguments",
    "add_serve_arguments",
    "add_store_arguments",
    "auth_options",
    "integrity_options",
    "limit_options",
    "main",
    "run_server",
    "serve",
    "serve_command",
    "store_options",
]


@dataclass(frozen=True, slots=True)
class ServerInfo:
    api_url: str  # e.g. http://127.0.0.1:8765
    host: str
    port: int
    blob_port: int | None  # None: blobs are fetched from presigned store URLs, no data port
    data_dir: Path
    stores: str = ""  # e.g. "metadata postgresql://u:***@db/artfs, blobs s3://bucket/prefix"
    auth: bool = False  # whether requests need a token

    def ready_line(self) -> str:
        blobs = f"blobs on :{self.blob_port}" if self.blob_port is not None else "blobs presigned"
        where = self.stores or f"data in {self.data_dir}"
        tokens = "; tokens required" if self.auth else ""
        return f"artfs registry listening on {self.api_url} ({blobs}), {where}{tokens}"


@dataclass(frozen=True, slots=True)
class AuthOptions:
    """``--auth {on,off}`` (None: on unless the host is a loopback address) and
    ``--auth-ttl`` (seconds a server trusts what it looked up about a token),
    ``--blob-url-lifetime`` (seconds a blob URL handed out by locate works: signing.py)."""

    mode: str | None = None
    ttl: float = DEFAULT_TTL
    url_lifetime: float = DEFAULT_LIFETIME

    def enabled(self, host: str) -> bool:
        if self.mode is None:
            return not is_loopback(host)
        return self.mode == "on"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``; names and wildcard addresses are not."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def add_auth_arguments(parser: Any) -> None:
    """``--auth`` and ``--auth-ttl`` on an argparse parser (``artfs serve``, ``-m artfs.server``)."""
    parser.add_argument(
        "--auth",
        choices=("on", "off"),
        default=None,
        help="require bearer tokens (artfs token create) on every request "
        "(default: off on a loopback --host, on otherwise)",
    )
    parser.add_argument(
        "--auth-ttl",
        type=float,
        default=DEFAULT_TTL,
        help="seconds a server trusts a token it looked up; a revoke takes effect within "
        "this time (default %(default)s)",
    )
    parser.add_argument(
        "--blob-url-lifetime",
        type=float,
        default=DEFAULT_LIFETIME,
        help="seconds a signed blob URL handed out by the API stays valid; clients locate "
        "again when it runs out (default %(default)s)",
    )


def auth_options(args: Any) -> AuthOptions:
    if args.auth_ttl < 0:
        raise InvalidInput("--auth-ttl must be 0 or more seconds")
    if not 1 <= args.blob_url_lifetime <= 7 * 86400:
        raise InvalidInput("--blob-url-lifetime must be between 1 second and 7 days")
    return AuthOptions(args.auth, args.auth_ttl, args.blob_url_lifetime)


def auth_warning(host: str, auth: AuthOptions) -> str | None:
    """The loud line printed when a server reachable from other hosts checks no tokens."""
    if auth.enabled(host) or is_loopback(host):
        return None
    return (
        f"WARNING: --auth off on {host}: anyone who can reach this address may read, "
        "publish, move aliases and delete versions in every project. Use --auth on with "
        "tokens (artfs token create), or listen on 127.0.0.1."
    )


DEFAULT_STORES = StoreOptions()
DEFAULT_AUTH = AuthOptions()
DEFAULT_INTEGRITY = IntegrityOptions()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def blob_idle_timeout() -> float:
    """Seconds the data server keeps an idle keep-alive connection (``ARTFS_BLOB_IDLE_TIMEOUT``,
    default ``blobserver.IDLE_TIMEOUT``); tests shorten it to meet closed pooled connections."""
    raw = os.environ.get("ARTFS_BLOB_IDLE_TIMEOUT")
    try:
        value = float(raw) if raw else IDLE_TIMEOUT
    except ValueError:
        raise InvalidInput(f"ARTFS_BLOB_IDLE_TIMEOUT={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise InvalidInput(f"ARTFS_BLOB_IDLE_TIMEOUT={raw!r} must be positive")
    return value


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return host == ""


async def serve(
    data_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    blob_port: int | None = None,
    *,
    public_blob_url: str | None = None,
    stores: StoreOptions = DEFAULT_STORES,
    auth: AuthOptions = DEFAULT_AUTH,
    limits: ServerLimits = DEFAULT_LIMITS,
    integrity: IntegrityOptions = DEFAULT_INTEGRITY,
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the registry in ``data_dir`` until cancelled.

    ``blob_port`` defaults to ``port + 1`` (ephemeral when ``port`` is 0); 0 means ephemeral.
    ``public_blob_url`` overrides the base URL handed to clients for blob bytes
    (e.g. behind a proxy); by default it is this host, as the client addressed it, on ``blob_port``.
    With a store that presigns (S3) no data port is opened: clients fetch from the store.
    ``auth``: whether every request but ``GET /v1`` needs a token (server/auth.py).
    ``limits``: connection, upload and slow-body limits of both ports (server/limits.py).
    ``integrity``: the background scrub's rate (server/integrity.py).
    """
    data_dir = Path(data_dir).resolve()
    if blob_port is None:
        blob_port = port + 1 if port else 0
    registry = await trio.to_thread.run_sync(
        partial(
            open_registry,
            data_dir,
            db=stores.db,
            blobs=stores.blobs,
            s3_endpoint=stores.s3_endpoint,
            db_pool=stores.db_pool,
        )
    )
    authenticator = Authenticator(registry.find_token, enabled=auth.enabled(host), ttl=auth.ttl)

    async def authorize_blobs(authorization: str | None, right: str) -> None:
        who = await authenticator.principal(authorization)
        who.require_any(right, "reading blobs" if right == "read" else "uploading blobs")

    async def open_writer(authorization: str | None, sha256: str, size: int) -> BlobWriter:
        who = await authenticator.principal(authorization)
        return await trio.to_thread.run_sync(registry.blob_writer, sha256, size, who)

    async def record_upload(authorization: str | None, sha256: str, created: bool) -> bool:
        who = await authenticator.principal(authorization)
        return await trio.to_thread.run_sync(registry.record_upload, who, sha256, created)

    try:
        # Tokens required: reads on the data port need URLs signed by the API (signing.py).
        signer: UrlSigner | None = None
        if authenticator.enabled:
            secret = await trio.to_thread.run_sync(registry.url_secret)
            signer = UrlSigner(secret, auth.url_lifetime)
        if authenticator.enabled:
            tokens = await trio.to_thread.run_sync(registry.tokens.list)
            if not any(t.active for t in tokens):
                print(
                    "artfs serve: tokens are required but this registry has none yet: create one "
                    "on this host with 'artfs token create NAME --write PROJECT' (same --data/--db)",
                    file=sys.stderr,
                    flush=True,
                )
        async with trio.open_nursery() as nursery:
            checks = IntegrityService(registry, integrity)
            await nursery.start(checks.run)
            blobs = BlobDataServer(
                registry.blobs.local_path,  # type: ignore[arg-type]
                writer=open_writer,
                authorize=authorize_blobs,
                limits=limits,
                read_gate=read_gate(signer) if signer is not None else None,
                stored=record_upload,
                idle_timeout=blob_idle_timeout(),
            )
            bound_blob_port: int | None = None
            if not registry.blobs.presigns:
                bound_blob_port = await nursery.start(blobs.serve, host, blob_port)

            def blob_base_url(request: Request) -> str:
                if public_blob_url:
                    return public_blob_url.rstrip("/")
                seen = (
                    _url_host(host)
                    if not _is_wildcard(host)
                    else _url_host(request.url.hostname or "127.0.0.1")
                )
                return f"http://{seen}:{bound_blob_port}"

            config = Config()
            config.bind = [f"{_url_host(host)}:{port}"]
            config.accesslog = None
            config.errorlog = logging.getLogger("hypercorn.error")  # through our logging, once
            config.loglevel = "WARNING"
            config.keep_alive_timeout = 75
            # A connection that sends nothing for this long while a request is open is
            # closed; slow bodies are cut off sooner by the BodyPacer (limits.py).
            config.read_timeout = READ_TIMEOUT
            config.backlog = min(limits.max_connections, 4096)

            def data_stats() -> dict[str, int]:
                return {
                    "blob_requests": blobs.requests,
                    "blob_bytes_sent": blobs.bytes_sent,
                    "blob_bytes_received": blobs.bytes_received,
                    **checks.stats(),
                }

            def report_damage(sha: str, detail: str) -> str:
                return checks.report(sha, detail).value

            app: Any = RequestCap(
                create_app(
                    registry,
                    blob_base_url,
                    data_stats,
                    authenticator,
                    signer,
                    auth.url_lifetime,
                    limits=limits,
                    report_damage=report_damage,
                ),
                limits.max_connections,
            )
            binds = await nursery.start(partial(hypercorn_serve, app, config, mode="asgi"))
            bound_port = int(binds[0].rsplit(":", 1)[1])
            task_status.started(
                ServerInfo(
                    f"http://{_url_host(host)}:{bound_port}",
                    host,
                    bound_port,
                    bound_blob_port,
                    data_dir,
                    describe_stores(stores, data_dir),
                    authenticator.enabled,
                )
            )
    finally:
        registry.close()


async def run_server(
    data_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    blob_port: int | None = None,
    *,
    public_blob_url: str | None = None,
    stores: StoreOptions = DEFAULT_STORES,
    auth: AuthOptions = DEFAULT_AUTH,
    limits: ServerLimits = DEFAULT_LIMITS,
    integrity: IntegrityOptions = DEFAULT_INTEGRITY,
) -> None:
    """Serve until SIGINT/SIGTERM, printing one line when ready (what ``artfs serve`` runs).

    A failure to start (port in use, unusable data directory) is raised as itself, not
    wrapped in an exception group, so the CLI can print it as one line."""
    try:
        async with trio.open_nursery() as nursery:
            info: ServerInfo = await nursery.start(
                partial(
                    serve,
                    data_dir,
                    host,
                    port,
                    blob_port,
                    public_blob_url=public_blob_url,
                    stores=stores,
                    auth=auth,
                    limits=limits,
                    integrity=integrity,
                )
            )
            warning = auth_warning(host, auth)
            if warning is not None:
                print(f"{'!' * 78}\n{warning}\n{'!' * 78}", file=sys.stderr, flush=True)
            print(info.ready_line(), flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if leaf is group:
            raise
        raise leaf from None


def add_serve_arguments(parser: Any) -> None:
    """Every option of ``artfs serve`` (also what ``python -m artfs.server`` takes: it runs
    the same command). Add a server option here, once."""
    parser.add_argument(
        "--data",
        default=os.environ.get("ARTFS_DATA", "./artfs-data"),
        help="data directory (SQLite + blobs; default $ARTFS_DATA or %(default)s)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="API port to listen on (default %(default)s)"
    )
    parser.add_argument(
        "--blob-port",
        type=int,
        default=None,
        help="port of the blob data server (default: PORT+1; 0: any free port)",
    )
    parser.add_argument(
        "--public-blob-url",
        default=None,
        help="base URL clients use for blob bytes (default: this host on --blob-port)",
    )
    add_store_arguments(parser)
    add_auth_arguments(parser)
    add_limit_arguments(parser)
    add_integrity_arguments(parser)


def serve_command(args: Any) -> int:
    """``artfs serve``: run until SIGINT/SIGTERM. Errors are raised for ``cli.main`` to print."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    stores, auth = store_options(args), auth_options(args)
    freeze_startup_heap()
    return_freed_memory()
    try:
        trio.run(
            partial(
                run_server,
                Path(args.data).expanduser().absolute(),
                args.host,
                args.port,
                args.blob_port,
                public_blob_url=args.public_blob_url,
                stores=stores,
                auth=auth,
                limits=limit_options(args),
                integrity=integrity_options(args),
            )
        )
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise InvalidInput(
                f"cannot listen on {args.host}:{args.port} or its blob port: address in use "
                "(another artfs serve running? choose --port/--blob-port)"
            ) from None
        raise
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m artfs.server ARGS`` is ``artfs serve ARGS``: one parser, one error line."""
    from ..cli import main as cli_main

    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])
