"""Sources for external-ref tests: a tiny HTTP server with Range support on loopback, and
objects in the test S3 bucket (SeaweedFS; tests/backends.py's environment)."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

S3_ENDPOINT = os.environ.get("ARTFS_TEST_S3_ENDPOINT")
S3_BUCKET = os.environ.get("ARTFS_TEST_S3_BUCKET", "artfs-test")
HAVE_S3 = bool(S3_ENDPOINT and os.environ.get("AWS_ACCESS_KEY_ID"))
KINDS = ["file", "http", pytest.param("s3", marks=pytest.mark.skipif(not HAVE_S3, reason="no S3"))]


class RangeServer:
    """Serves files of ``root`` with ``Range: bytes=a-b`` (206) and HEAD; counts GETs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.gets = 0
        self.ranges: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _file(self) -> Path | None:
                path = outer.root / self.path.lstrip("/")
                return path if path.is_file() else None

            def do_HEAD(self) -> None:
                path = self._file()
                if path is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()

            def do_GET(self) -> None:
                outer.gets += 1
                path = self._file()
                if path is None:
                    self.send_error(404)
                    return
                size = path.stat().st_size
                spec = self.headers.get("Range", "")
                outer.ranges.append(spec)
                start, end = 0, size - 1
                if spec.startswith("bytes="):
                    a, _, b = spec[6:].partition("-")
                    start, end = int(a), min(int(b), size - 1)
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(end + 1 - start))
                self.end_headers()
                with open(path, "rb") as f:  # only the range: benchmarks read 256 MiB files
                    f.seek(start)
                    left = end + 1 - start
                    while left > 0 and (chunk := f.read(min(left, 1 << 20))):
                        self.wfile.write(chunk)
                        left -= len(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def range_server(root: Path) -> Iterator[RangeServer]:
    server = RangeServer(root)
    try:
        yield server
    finally:
        server.close()


class S3Objects:
    """Objects under a unique prefix of the test bucket, removed at the end."""

    def __init__(self) -> None:
        import boto3
        import botocore.exceptions

        self.s3 = boto3.client("s3", endpoint_url=S3_ENDPOINT)
        self.prefix = f"refs-{uuid.uuid4().hex[:12]}/"
        with contextlib.suppress(botocore.exceptions.ClientError):  # exists: tests made it
            self.s3.create_bucket(Bucket=S3_BUCKET)

    def put(self, name: str, data: bytes) -> str:
        self.s3.put_object(Bucket=S3_BUCKET, Key=self.prefix + name, Body=data)
        return f"s3://{S3_BUCKET}/{self.prefix}{name}"

    def close(self) -> None:
        listed = self.s3.list_objects_v2(Bucket=S3_BUCKET, Prefix=self.prefix)
        for item in listed.get("Contents", []):
            self.s3.delete_object(Bucket=S3_BUCKET, Key=item["Key"])


@dataclass
class Place:
    """Where ref objects live for one scheme: ``put`` returns a URL, ``put`` again changes it."""

    put: Callable[[str, bytes], str]


@pytest.fixture(params=KINDS)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    data = tmp_path / "data"
    data.mkdir()

    def to_dir(name: str, body: bytes) -> Path:
        (data / name).write_bytes(body)
        return data / name

    if request.param == "file":
        yield Place(lambda n, b: to_dir(n, b).as_uri())
    elif request.param == "http":
        http = RangeServer(data)
        yield Place(lambda n, b: (to_dir(n, b), http.url(n))[1])
        http.close()
    else:
        s3 = S3Objects()
        yield Place(s3.put)
        s3.close()
