"""A real HTTP server on 127.0.0.1 serving artifact bytes, with switchable faults.

    with ArtifactServer() as server:
        url = server.put("/a.whl", data)
        server.faults = Faults(truncate_after=1000)   # the next responses misbehave
        ...
        assert server.served[-1].range == "bytes=1000-"

It honours `Range: bytes=N-` (and `bytes=N-M`) with 206, answers 416 past the end and
404 for unknown paths. `faults` is read at the start of each request, so a test may
change it between requests. `served` records every response, for assertions.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Faults:
    """How the server misbehaves; the defaults serve correctly."""

    ignore_range: bool = False  # answer 200 with the whole body even when asked for a range
    truncate_after: int | None = None  # cut the connection after this many body bytes
    endless: bool = False  # after the blob, keep sending bytes until the client goes away
    stall_after: int | None = None  # after this many body bytes, go silent for stall_s
    stall_s: float = 0.0
    wrong_bytes: bool = False  # serve other bytes of the same length
    bearer_token: str | None = None  # require `Authorization: Bearer <token>`, else 401


@dataclass(frozen=True)
class Served:
    """One response, recorded when it ends (bytes_sent counts body bytes written)."""

    path: str
    range: str | None
    authorization: str | None
    status: int
    bytes_sent: int


@dataclass
class ArtifactServer:
    """Threaded HTTP server; a context manager (start on enter, stop on exit)."""

    faults: Faults = field(default_factory=Faults)
    served: list[Served] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def put(self, path: str, data: bytes) -> str:
        """Serve `data` at `path` (starting with '/'); returns its URL."""
        with self._lock:
            self._blobs[path] = data
        return self.url(path)

    def url(self, path: str) -> str:
        return self.base_url + path

    def requests_for(self, path: str) -> list[Served]:
        with self._lock:
            return [s for s in self.served if s.path == path]

    def start(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled responses and ends endless ones
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ArtifactServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _blob(self, path: str) -> bytes | None:
        with self._lock:
            return self._blobs.get(path)

    def _record(self, served: Served) -> None:
        with self._lock:
            self.served.append(served)


def _handler_for(server: ArtifactServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            faults = server.faults
            asked = self.headers.get("Range")
            auth = self.headers.get("Authorization")
            sent = 0
            status = 500
            try:
                status, body, headers = self._answer(faults, asked, auth)
                sent = self._send(faults, status, body, headers)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away (often on purpose)
            finally:
                server._record(Served(self.path, asked, auth, status, sent))

        def do_POST(self) -> None:
            """Answered like a GET of the same path (a report's answer), body ignored."""
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.do_GET()

        def _answer(
            self, faults: Faults, asked: str | None, auth: str | None
        ) -> tuple[int, bytes, dict[str, str]]:
            if faults.bearer_token is not None and auth != f"Bearer {faults.bearer_token}":
                return 401, b"unauthorized", {"WWW-Authenticate": "Bearer"}
            data = server._blob(self.path)
            if data is None:
                return 404, b"not found", {}
            if faults.wrong_bytes:
                data = bytes(b ^ 0xFF for b in data)
            match = _RANGE.match(asked or "")
            if match is None or faults.ignore_range:
                return 200, data, {}
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            if start >= len(data) or end < start:
                return 416, b"", {"Content-Range": f"bytes */{len(data)}"}
            end = min(end, len(data) - 1)
            content_range = f"bytes {start}-{end}/{len(data)}"
            return 206, data[start : end + 1], {"Content-Range": content_range}

        def _send(self, faults: Faults, status: int, body: bytes, headers: dict[str, str]) -> int:
            endless = faults.endless and status in (200, 206)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if endless:
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            limit = faults.truncate_after
            sent = self._write(body[:limit] if limit is not None else body, faults, 0)
            if limit is not None and limit < len(body):
                self.close_connection = True  # short of Content-Length: the client sees a cut
            elif endless:
                while not server._stopping.is_set():
                    sent = self._write(b"\0" * 65536, faults, sent)
            return sent

        def _write(self, data: bytes, faults: Faults, sent: int) -> int:
            stall_at = faults.stall_after
            for i in range(0, len(data), 16384):
                piece = data[i : i + 16384]
                if stall_at is not None and sent <= stall_at < sent + len(piece):
                    cut = stall_at - sent
                    self.wfile.write(piece[:cut])
                    self.wfile.flush()
                    server._stopping.wait(faults.stall_s)
                    self.wfile.write(piece[cut:])
                else:
                    self.wfile.write(piece)
                sent += len(piece)
            self.wfile.flush()
            return sent

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: tests assert on `served` instead

    return Handler
