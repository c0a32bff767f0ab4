"""Fault injection for the tests: an HTTP proxy in front of a moto S3 server that can answer 503, throttle
(SlowDown), hang, answer each request only after 5 s ("slow") or send the reply's body a byte at a time
("trickle"), and an object store wrapper that "crashes" the process at a chosen write."""

from __future__ import annotations

import http.client
import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from sklambda.objects import Blob, ObjectStore

Fault = Literal["503", "slowdown", "hang", "slow", "trickle"]
SLOW_SECONDS = 5.0
TRICKLE_SECONDS_PER_BYTE = 0.05

_ERRORS = {
    "503": ("ServiceUnavailable", "Service is unable to handle request."),
    "slowdown": ("SlowDown", "Please reduce your request rate."),
}


class S3FaultProxy:
    """Forwards every request to `upstream` (a moto server) unless a fault is set; then answers S3-style errors,
    or holds the connection without answering ("hang"). Counts the requests it failed."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.fault: Fault | None = None
        self.failed_requests = 0
        self._release = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy.fault
                if fault == "503" or fault == "slowdown" or fault == "hang":
                    proxy.failed_requests += 1
                    self._fail(fault)
                    return
                if fault is not None:
                    proxy.failed_requests += 1
                if fault == "slow" and proxy._release.wait(SLOW_SECONDS):
                    return
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                connection.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                response = connection.getresponse()
                payload = response.read()
                connection.close()
                try:
                    self.send_response(response.status)
                    for name, value in response.getheaders():
                        if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if fault != "trickle":
                        self.wfile.write(payload)
                        return
                    for index in range(len(payload)):
                        if proxy._release.wait(TRICKLE_SECONDS_PER_BYTE):
                            return
                        self.wfile.write(payload[index : index + 1])
                        self.wfile.flush()
                except OSError:  # the client gave up: what the faults are for
                    self.close_connection = True

            def _fail(self, fault: Fault) -> None:
                if fault == "hang":
                    proxy._release.wait(30)
                    self.close_connection = True
                    return
                code, message = _ERRORS[fault]
                payload = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload if self.command != "HEAD" else b"")

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> S3FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    @contextmanager
    def failing(self, fault: Fault) -> Iterator[None]:
        self.fault, self.failed_requests = fault, 0
        self._release.clear()
        try:
            yield
        finally:
            self.fault = None
            self._release.set()


class Crash(BaseException):
    """The process died here (a BaseException, so that no `except Exception` in the code under test sees it)."""


class CrashingObjects:
    """An ObjectStore that dies just before a chosen write: the `crash_at`-th one (1-based), or the first whose key
    ends with `crash_on`. Every write before it has landed."""

    def __init__(self, inner: ObjectStore, *, crash_at: int | None = None, crash_on: str | None = None) -> None:
        self.inner = inner
        self.crash_at = crash_at
        self.crash_on = crash_on
        self.writes: list[str] = []

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        if len(self.writes) + 1 == self.crash_at or (self.crash_on is not None and key.endswith(self.crash_on)):
            raise Crash(f"crashed before writing {key}")
        etag = self.inner.put(key, data, if_match=if_match, if_none_match=if_none_match)
        self.writes.append(key)
        return etag

    def uri(self, key: str = "") -> str:
        return self.inner.uri(key)

    def get(self, key: str) -> Blob:
        return self.inner.get(key)

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        return self.inner.get_if_changed(key, etag)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def elapsed(start: float) -> float:
    return time.monotonic() - start


def promote_in_process(store_uri: str, version: int, barrier: Any, results: Any) -> None:
    """Run in a separate process: promote `version`, with the serving check waiting at `barrier` so that both
    processes have read the alias before either writes it. Puts ("won", version) or ("conflict", message)."""
    from sklambda import registry
    from sklambda.errors import AliasConflict
    from sklambda.store import ModelStore

    store = ModelStore.from_uri(store_uri)
    try:
        registry.promote(
            store, "demo", version, alias="champion", by=f"process {version}", reason="race",
            check=lambda manifest: barrier.wait(timeout=30),
        )  # fmt: skip
    except AliasConflict as error:
        results.put(("conflict", str(error)))
    else:
        results.put(("won", version))
