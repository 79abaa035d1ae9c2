"""An API process cut off from PostgreSQL by a partition (packets dropped: no FIN, no
RST) answers 503 `unavailable` within seconds, as docs/deploy.md says, instead of holding
its requests until the kernel gives up on the connection (~15 minutes). The partition is
real: iptables drops every packet to and from a relay's port, and the server reaches
PostgreSQL only through that relay (its pooled connections already open)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support.api_server import ApiServer
from tests.support.services import unavailable
from tests.support.topology import TcpProxy

pytestmark = pytest.mark.postgres


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
    relay = TcpProxy(url.port or 5432, url.host or "127.0.0.1")  # never cut: iptables is
    through = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    server = ApiServer(tmp_path, through)
    headers = {"Authorization": f"Bearer {server.issue('operator')['operator'][0]}"}
    server.start(wait="/readyz")
    try:
        assert httpx.get(f"{server.url}/vehicles", headers=headers, timeout=10).status_code == 200
        with partitioned(relay.port):
            started = time.monotonic()
            answer = httpx.get(f"{server.url}/vehicles", headers=headers, timeout=60)
            took = time.monotonic() - started
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "unavailable"
            assert took < 30, f"answered after {took:.0f} s"
            assert "cannot read" in answer.json()["error"]["message"]
            started = time.monotonic()  # the audit's chain check reads on its own connections
            answer = httpx.get(f"{server.url}/audit/verify", headers=headers, timeout=60)
            took = time.monotonic() - started
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "unavailable"
            assert took < 30, f"answered after {took:.0f} s"
        deadline = time.monotonic() + 60  # and it serves again once the link is back
        while httpx.get(f"{server.url}/vehicles", headers=headers, timeout=60).status_code != 200:
            assert time.monotonic() < deadline, "did not recover"
            time.sleep(0.5)
    finally:
        server.stop()
        relay.close()
