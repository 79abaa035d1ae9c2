"""The test and bench load balancer's two ways to spread requests over API processes:
round robin, and by caller (consistent hashing on the bearer token), which keeps each
vehicle's requests on one process while it is up."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from muto.sim.services import Haproxy
from tests.support.services import unavailable


class Named(ThreadingHTTPServer):
    """A backend that answers every request 200 with its own name."""

    def __init__(self, name: str) -> None:
        self.name = name

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def backends() -> Iterator[dict[str, int]]:
    if Haproxy.find() is None:
        unavailable("haproxy not found (apt-get install haproxy)")
    servers = [Named("api-1"), Named("api-2")]
    yield {s.name: s.server_address[1] for s in servers}
    for server in servers:
        server.shutdown()
        server.server_close()


def served_by(lb: Haproxy, token: str, requests: int) -> set[str]:
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as client:
        return {client.get(f"{lb.url}/x").text for _ in range(requests)}


@pytest.mark.parametrize("balance", ["roundrobin", Haproxy.BY_CALLER])
def test_by_caller_keeps_each_token_on_one_process(
    tmp_path: Path, backends: dict[str, int], balance: str
) -> None:
    lb = Haproxy(tmp_path, backends, balance)
    lb.start()
    try:
        found = {f"token-{i}": served_by(lb, f"token-{i}", 6) for i in range(24)}
    finally:
        lb.stop()
    if balance == "roundrobin":
        assert all(names == {"api-1", "api-2"} for names in found.values())
    else:
        assert all(len(names) == 1 for names in found.values())  # one process a token
        assert set().union(*found.values()) == {"api-1", "api-2"}  # spread over both


class DiesOnce(ThreadingHTTPServer):
    """A backend that closes the connection without an answer the first time it sees
    each method (a replica killed after reading the request, perhaps after its commit),
    then answers 200; /readyz always answers."""

    def __init__(self, seen: list[str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/readyz":
                    seen.append(self.command)
                    if seen.count(self.command) == 1:
                        self.close_connection = True
                        return
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_a_read_whose_server_died_is_retried_and_a_write_is_not(tmp_path: Path) -> None:
    """A write may have committed before its server died, and the balancer cannot tell
    whether a second one is harmless: it never sends it again, the caller does (with its
    Idempotency-Key: docs/deploy.md, docs/api.md); a read goes to the next server."""
    if Haproxy.find() is None:
        unavailable("haproxy not found (apt-get install haproxy)")
    seen: list[str] = []
    servers = [DiesOnce(seen), DiesOnce(seen)]
    lb = Haproxy(tmp_path, {f"api-{i}": s.server_address[1] for i, s in enumerate(servers)})
    lb.start()
    try:
        assert httpx.get(f"{lb.url}/desired-states/latest", timeout=30).status_code == 200
        # Head and body in one write, as curl sends them: haproxy holds the whole request
        # before it connects, and so could send it again.
        posted = one_write(lb.port, b"POST /desired-states", b'{"stack": "app"}')
        assert posted.startswith(b"HTTP/1.1 502")  # the caller learns it, and decides
        assert seen == ["GET", "GET", "POST"]  # the GET twice, the POST once
    finally:
        lb.stop()
        for server in servers:
            server.shutdown()
            server.server_close()


def one_write(port: int, line: bytes, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            line + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer
