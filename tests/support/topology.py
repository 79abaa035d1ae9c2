"""What stands around the production topology's `muto cloud serve --role ...` processes
(tests.support.api_server.ApiServer) in tests: a TCP relay that can cut a process off its
database, the secured broker, haproxy before the API processes."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

from muto.sim.services import Haproxy
from tests.conftest import free_port, unavailable
from tests.support.api_server import ApiServer


class TcpProxy:
    """A TCP relay on a free port to `target_port` that a test can cut (every open
    connection dropped, new ones closed at once) and restore: a process behind it
    loses its database the way it would to a network fault."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._cut = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._thread.join(timeout=5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()  # both pumps close both: closing twice is harmless
            with self._lock:
                self._open -= {source, sink}


def load_balancer(workdir: Path, apis: list[ApiServer]) -> Haproxy:
    """haproxy before `apis` (fails in CI, skips elsewhere, when it is not installed)."""
    if Haproxy.find() is None:
        unavailable("haproxy not found (apt-get install haproxy)")
    return Haproxy(workdir, {api.name: api.port for api in apis})
