"""An API process cut off from PostgreSQL by a partition (packets dropped: no FIN, no
RST) answers 503 `unavailable` within seconds, as docs/deploy.md says, instead of holding
its requests until the kernel gives up on the connection (~15 minutes). The partition is
real: iptables drops every packet to and from a forwarder's port, and the server reaches
PostgreSQL only through that forwarder (its pooled connections already open)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from muto.sim.services import free_port, prepare_cloud
from tests.support.services import unavailable

pytestmark = pytest.mark.postgres


class Forwarder:
    """127.0.0.1:<port> -> the database's host and port, a thread per direction."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.listener.close()


def iptables(*rule: str) -> None:
    subprocess.run(["iptables", "-w", *rule], check=True, capture_output=True)


@contextmanager
def partitioned(port: int) -> Iterator[None]:
    """Every packet to or from `port` on this host dropped while inside."""
    rules = [["INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP"],
             ["INPUT", "-p", "tcp", "--sport", str(port), "-j", "DROP"]]  # fmt: skip
    for rule in rules:
        iptables("-I", *rule)
    try:
        yield
    finally:
        for rule in rules:
            iptables("-D", *rule)


def test_a_replica_cut_off_from_postgresql_answers_503_within_seconds(
    postgres_url: str, tmp_path: Path
) -> None:
    if shutil.which("iptables") is None:
        unavailable("iptables not found (apt-get install iptables)")
    if subprocess.run(["iptables", "-w", "-L", "INPUT", "-n"], capture_output=True).returncode:
        unavailable("iptables cannot change this host's rules (needs root)")
    url = make_url(postgres_url)
    forwarder = Forwarder((url.host or "127.0.0.1", url.port or 5432))
    through = url.set(host="127.0.0.1", port=forwarder.port).render_as_string(hide_password=False)
    operator, *_ = prepare_cloud(tmp_path, through)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "muto.cli", "cloud", "serve", "--no-mqtt", "--port", str(port),
         "--data-dir", str(tmp_path / "cloud"), "--database-url", through],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "cloud.log").open("wb"),
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {operator}"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{api}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "no server"
            time.sleep(0.2)
        assert httpx.get(f"{api}/vehicles", headers=headers, timeout=10).status_code == 200
        with partitioned(forwarder.port):
            started = time.monotonic()
            answer = httpx.get(f"{api}/vehicles", headers=headers, timeout=60)
            took = time.monotonic() - started
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "unavailable"
            assert took < 30, f"answered after {took:.0f} s"
        deadline = time.monotonic() + 60  # and it serves again once the link is back
        while httpx.get(f"{api}/vehicles", headers=headers, timeout=60).status_code != 200:
            assert time.monotonic() < deadline, "did not recover"
            time.sleep(0.5)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        forwarder.close()
