"""The loopback feed and page server of the demo, the tests and the benchmarks (real HTTP, not a mock).

:class:`FeedServer` is one threaded HTTP/1.1 server on ``127.0.0.1``. It serves a directory of feed
files and article pages the way a well-behaved feed host does (feed content types, an ``ETag`` and
``Last-Modified`` per file, 304 to a conditional request; files are read per request, so a test may
edit one between polls): that is what ``newsflow demo`` serves the bundled sample feeds with. It also
answers any path with a scripted :class:`Reply`, or with what a function of the request returns, and
can behave badly on purpose, the way real feed hosts do: answer in chunks without a length, never
answer, close the socket mid-body, send a gzip bomb, drip the body or the headers a byte at a time,
or send empty gzip blocks forever (each until the client gives up). It honours ``If-None-Match`` /
``If-Modified-Since`` against a reply's ``etag`` / ``last_modified`` and records every request
(path, headers, time) and the most requests it had in flight at once, and how many bytes each
dripping reply got out before the client hung up (``dripped``).
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import mimetypes
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

Mode = Literal["normal", "chunked", "hang", "reset", "drip", "drip_headers", "gzip_forever"]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    mode: Mode = "normal"
    etag: str | None = None
    last_modified: str | None = None
    gzip: bool = False  # compress ``body`` with Content-Encoding: gzip
    hold: float = 0.0  # seconds to wait before answering (to overlap requests)
    repeat: int = 1  # "chunked": send ``body`` this many times (a body without Content-Length)
    drip_s: float = 0.2  # "drip*" and "gzip_forever": seconds between single bytes (or empty blocks)


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    at: float


Handler = Reply | Callable[[Request], Reply]

CONTENT_TYPES = {
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".xml": "application/xml",
    ".opml": "text/x-opml",
}


def gzip_bomb(decompressed_bytes: int) -> bytes:
    """A gzip stream of zeros: about 1 KB compressed per MB it inflates to."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = []
    for _ in range(decompressed_bytes // len(block)):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(bytes(decompressed_bytes % len(block))))
    parts.append(compressor.flush())
    return b"".join(parts)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a loaded test machine accepts slowly; a short backlog drops connects

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that dropped the connection (size limit, timeout) is what tests provoke
        super().handle_error(request, client_address)


class FeedServer:
    """Serve ``directory`` and scripted routes on ``http://127.0.0.1:<port>`` in a background thread.

    A context manager. A route wins over a file of the same path; a path that is neither is a 404.
    """

    def __init__(self, directory: Path | None = None, port: int = 0) -> None:
        self.directory = directory.resolve() if directory is not None else None
        self.routes: dict[str, Handler] = {}
        self.requests: list[Request] = []
        self.max_in_flight = 0
        self.dripped: dict[str, int] = {}  # path -> bytes a dripping reply wrote before the client left
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        host = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                host._serve(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
                return

            def finish(self) -> None:
                if not self.wfile.closed and self.connection.fileno() != -1:
                    super().finish()  # a "reset" reply already closed the socket: nothing to flush

        self.httpd = _Server(("127.0.0.1", port), _Handler)
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), name="feed-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def route(self, path: str, handler: Handler) -> str:
        """Answer ``path`` with ``handler``; returns the full URL."""
        self.routes[path] = handler
        return self.url(path)

    def dripped_before_hangup(self, path: str, wait_s: float = 10.0) -> int | None:
        """Bytes a dripping reply on ``path`` wrote before the client hung up (waits for it to notice)."""
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            with self._lock:
                if path in self.dripped:
                    return self.dripped[path]
            time.sleep(0.05)
        return None

    def hits(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    # -- serving ----------------------------------------------------------------------------------
    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        request = Request(handler.path, {k.lower(): v for k, v in handler.headers.items()}, time.monotonic())
        with self._lock:
            self.requests.append(request)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            route = self.routes.get(handler.path.split("?", 1)[0], self._file)
            reply = route(request) if callable(route) else route
            if reply.hold:
                self._stop.wait(reply.hold)
            self._answer(handler, request, reply)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (size limit, timeout): that is what the test provoked
        finally:
            with self._lock:
                self._in_flight -= 1

    def _file(self, request: Request) -> Reply:
        """The file at the request's path under the served directory, with its validators; else a 404."""
        path = request.path.split("?", 1)[0]
        if self.directory is None:
            return Reply(404, b"not found")
        target = (self.directory / unquote(path).lstrip("/")).resolve()
        if not target.is_relative_to(self.directory) or not target.is_file():
            return Reply(404, b"not found")
        data = target.read_bytes()
        content_type = CONTENT_TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0]
        return Reply(
            200,
            data,
            headers={"Content-Type": content_type or "application/octet-stream"},
            etag='"' + hashlib.sha256(data).hexdigest()[:16] + '"',
            last_modified=email.utils.formatdate(target.stat().st_mtime, usegmt=True),
        )

    def _answer(self, handler: BaseHTTPRequestHandler, request: Request, reply: Reply) -> None:
        if reply.mode == "hang":  # accept, read the request, never answer
            self._stop.wait(60)
            handler.close_connection = True
            return
        if reply.mode in ("drip", "drip_headers", "gzip_forever"):
            self._drip(handler, request, reply)
            return
        if self._not_modified(request, reply):
            handler.send_response(304)
            if reply.etag:
                handler.send_header("ETag", reply.etag)
            for name, value in reply.headers.items():  # a 304 repeats the caching headers
                if name.lower() in ("cache-control", "expires", "date"):
                    handler.send_header(name, value)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        body = gzip.compress(reply.body) if reply.gzip else reply.body
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        if reply.gzip:
            handler.send_header("Content-Encoding", "gzip")
        if reply.etag:
            handler.send_header("ETag", reply.etag)
        if reply.last_modified:
            handler.send_header("Last-Modified", reply.last_modified)
        if reply.mode == "chunked":
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for _ in range(reply.repeat):
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
            handler.wfile.write(b"0\r\n\r\n")
            return
        if reply.mode == "reset":  # promise a long body, send part of it, then reset the connection
            handler.send_header("Content-Length", str(len(body) * 10 + 1))
            handler.end_headers()
            handler.wfile.write(body)
            handler.wfile.flush()
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
            handler.close_connection = True
            return
        if "Content-Length" not in reply.headers:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _drip(self, handler: BaseHTTPRequestHandler, request: Request, reply: Reply) -> None:
        """Write slowly and without end: until the client hangs up, or 10 minutes, or shutdown."""
        handler.close_connection = True
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
        if reply.mode == "drip":
            head += b"Content-Length: 100000\r\n\r\n"
        elif reply.mode == "gzip_forever":  # a gzip header, then empty stored deflate blocks
            head += b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
            head += b"%x\r\n%s\r\n" % (len(gzip_header), gzip_header)
        sent = 0
        path = request.path
        try:
            if reply.mode == "drip_headers":
                chunks: Any = (bytes([b]) for b in (head + b"X-Padding: " + b"a" * 10_000_000))
            else:
                handler.wfile.write(head)
                handler.wfile.flush()
                empty_block = b"\x00\x00\x00\xff\xff"
                unit = (
                    b"%x\r\n%s\r\n" % (len(empty_block), empty_block)
                    if reply.mode == "gzip_forever"
                    else b"x"
                )
                chunks = (unit for _ in range(10_000_000))
            deadline = time.monotonic() + 600
            for chunk in chunks:
                if self._stop.is_set() or time.monotonic() > deadline:
                    break
                handler.wfile.write(chunk)
                handler.wfile.flush()
                sent += len(chunk)
                self._stop.wait(reply.drip_s)
        except OSError:
            pass  # the client hung up: what the test wants
        finally:
            with self._lock:
                self.dripped[path] = self.dripped.get(path, 0) + sent

    @staticmethod
    def _not_modified(request: Request, reply: Reply) -> bool:
        if reply.status != 200:
            return False
        if reply.etag and request.headers.get("if-none-match") == reply.etag:
            return True
        return bool(
            reply.last_modified
            and not reply.etag
            and request.headers.get("if-modified-since") == reply.last_modified
        )
