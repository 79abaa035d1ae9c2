"""The test and bench load balancer's two ways to spread requests over API processes:
round robin, and by caller (consistent hashing on the bearer token), which keeps each
vehicle's requests on one process while it is up."""

from __future__ import annotations

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
