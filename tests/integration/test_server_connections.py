"""The server closes idle and slow connections and bounds how many are open (#14 item
7): real clients on raw sockets against `muto cloud serve` in its own process. A head
deadline of 1 s and 20 connections at most make the bounds quick to reach; every wait
below is capped generously (30 s), never timed."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api_server import ApiServer

HEAD_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 20
CAP_S = 30.0  # a bound on each wait, far above the deadlines


def serving(tmp_path: Path, head_timeout_s: float) -> Iterator[ApiServer]:
    found = ApiServer(tmp_path)
    found.options = (
        *("--head-timeout", str(head_timeout_s)),
        *("--keep-alive", "1"),
        *("--max-connections", str(MAX_CONNECTIONS)),
    )
    found.start()
    try:
        yield found
    finally:
        assert found.stop() == 0, found.tail()
        assert found.tracebacks() == []


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ApiServer]:
    yield from serving(tmp_path, HEAD_TIMEOUT_S)


@pytest.fixture
def patient_server(tmp_path: Path) -> Iterator[ApiServer]:
    """Heads may take 60 s: connections held open stay open while the test needs them."""
    yield from serving(tmp_path, 60)


def connect(server: ApiServer) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=CAP_S)
    return s


def closed_by_server(s: socket.socket, dribble: bytes = b"") -> bool:
    """Send `dribble` a byte at a time (0.2 s apart) until the server closes the
    connection (True) or CAP_S passes (False)."""
    deadline = time.monotonic() + CAP_S
    s.settimeout(0.2)
    sent = 0
    while time.monotonic() < deadline:
        try:
            if s.recv(4096) == b"":
                return True
        except TimeoutError:
            pass
        except ConnectionResetError:
            return True
        if dribble:
            try:
                s.sendall(dribble[sent % len(dribble) : sent % len(dribble) + 1])
            except (BrokenPipeError, ConnectionResetError):
                return True
            sent += 1
    return False


def test_a_silent_connection_is_closed(server: ApiServer) -> None:
    with connect(server) as s:
        assert closed_by_server(s)


def test_a_client_dribbling_its_headers_is_closed(server: ApiServer) -> None:
    with connect(server) as s:
        assert closed_by_server(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000)


def test_an_idle_keep_alive_connection_is_closed(server: ApiServer) -> None:
    with connect(server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        assert closed_by_server(s)


def test_connections_over_the_bound_are_refused_and_served_again_after(
    patient_server: ApiServer,
) -> None:
    server = patient_server
    held = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.5)  # let the server accept them all
        with connect(server) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            extra.settimeout(CAP_S)
            try:
                answer = extra.recv(4096)
            except ConnectionResetError:
                answer = b""
            assert answer == b""  # closed, not served
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + CAP_S
    while True:
        try:
            assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert "the limit is 20" in server.tail()


def test_a_head_over_16_kib_is_refused(patient_server: ApiServer) -> None:
    with connect(patient_server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17 * 1024)
        s.settimeout(CAP_S)
        assert s.recv(4096).startswith(b"HTTP/1.1 400")


def test_a_large_body_is_not_mistaken_for_a_large_head(server: ApiServer) -> None:
    """A head and a 64 KiB body sent in one write: the head is small, the request is read."""
    body = b'{"x": "' + b"a" * 64 * 1024 + b'"}'
    head = f"POST /vehicles HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    with connect(server) as s:
        s.sendall(head.encode() + body)
        s.settimeout(CAP_S)
        assert s.recv(4096).startswith(b"HTTP/1.1 401")  # read, then refused: no token


def test_a_request_after_a_413_on_the_same_connection_is_served(server: ApiServer) -> None:
    """The rest of a refused body is not the next request's head."""
    body = b" " * (1024 * 1024 + 1)
    head = f"POST /vehicles HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    with httpx.Client(base_url=server.url) as c:
        assert c.post("/vehicles", content=body).status_code in (401, 413)
        assert c.get("/healthz").status_code == 200
    with connect(server) as s:
        s.sendall(head.encode() + body + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(CAP_S)
        answers = b""
        while answers.count(b"HTTP/1.1 ") < 2:
            chunk = s.recv(65536)
            assert chunk, answers
            answers += chunk
        assert b"HTTP/1.1 200" in answers


def read_answers(s: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """`count` whole HTTP/1.1 answers (status, body) read off `s`, by content-length."""
    buffered, found = b"", []
    while len(found) < count:
        head, sep, rest = buffered.partition(b"\r\n\r\n")
        if not sep:
            chunk = s.recv(65536)
            assert chunk, f"closed after {len(found)} answers"
            buffered += chunk
            continue
        lines = head.split(b"\r\n")
        fields = dict(line.split(b": ", 1) for line in lines[1:])
        length = int(fields.get(b"content-length", b"0"))
        if len(rest) < length:
            chunk = s.recv(65536)
            assert chunk, "closed within a body"
            buffered += chunk
            continue
        found.append((int(lines[0].split()[1]), rest[:length]))
        buffered = rest[length:]
    return found


def test_pipelined_requests_get_whole_answers_in_order(patient_server: ApiServer) -> None:
    """Answers of every kind (the fast lane's, the app's, an error), pipelined on one
    connection, arrive whole and in order."""
    requests = (
        b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /no/such/path HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /reports/health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    with connect(patient_server) as s:
        s.sendall(requests)
        answers = read_answers(s, 4)
    assert [status for status, _ in answers] == [200, 404, 401, 200]
    bodies = [json.loads(body) for _, body in answers]
    assert bodies[0]["data"]["status"] == bodies[3]["data"]["status"] == "alive"
    assert bodies[1]["error"]["code"] == "not_found"
    assert bodies[2]["error"]["code"] == "unauthorized"


def test_a_request_that_expects_100_continue_gets_it_before_its_answer(
    patient_server: ApiServer,
) -> None:
    """The interim answer goes out at once (the body is sent only after it), and is not
    taken for the head of the answer that follows."""
    with connect(patient_server) as s:
        s.sendall(
            b"POST /reports/health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert read_answers(s, 1) == [(100, b"")]
        s.sendall(b"{}")
        ((status, body),) = read_answers(s, 1)
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
