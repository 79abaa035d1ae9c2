"""The tests' server (tests/support/api_server.py) is the process a test talks to: ports
are picked at random by parallel workers, and another's server may hold the one picked.
A real `muto cloud serve` started where an impostor already answers every path."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import listens
from tests.support.api_server import ApiServer


class Impostor(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_whose_port_is_taken_moves_to_one_it_listens_on(
    tmp_path: Path, impostor: int
) -> None:
    server = ApiServer(tmp_path)
    server.port, server.url = impostor, f"http://127.0.0.1:{impostor}"
    server.start()
    try:
        assert server.port != impostor
        assert server.proc is not None and listens(server.proc.pid, server.port)
        answer = httpx.get(f"{server.url}/livez", timeout=10)
        assert answer.json()["data"]["status"] == "alive"
    finally:
        assert server.stop() == 0
