"""Shared fixtures: a fresh PostgreSQL database per test session, a private Mosquitto.

In CI (CI=true) a missing PostgreSQL or mosquitto binary fails the tests that need it;
on a developer machine those tests skip with the reason.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from muto.cloud.settings import Settings
from muto.projections.store import ViewStore
from tests.support.services import IN_CI, fresh_database, unavailable
from tests.support.spine import postgres_settings, sqlite_settings

__all__ = ["IN_CI", "Mosquitto", "free_port", "unavailable"]

# Property tests judge results, never speed: hypothesis' default 200 ms deadline per
# example fails them on a loaded 2-core machine. Speed is the benchmarks' business.
settings.register_profile("muto", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "muto"))

# Below the kernel's ephemeral range (32768-60999 here): a port handed out for some
# process's outgoing connection can never be the one a test's server is about to bind.
TEST_PORTS = range(20000, 32000)
_ports = random.Random()  # its own generator: pytest-randomly reseeds the global one


def free_port() -> int:
    """A port nothing listens on now. Another process may still take it before the
    test's server binds it: servers started here check they got it (Mosquitto.start)."""
    for _ in range(100):
        port = _ports.choice(TEST_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {TEST_PORTS}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def view_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ViewStore]:
    """A view store on a SQLite file, then on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'views.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    found = ViewStore(url)
    yield found
    found.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A control plane's settings on SQLite files, then on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return sqlite_settings(tmp_path)
    return postgres_settings(request.getfixturevalue("postgres_url"), tmp_path)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    with fresh_database() as url:
        yield url


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` itself holds a listening TCP socket on `port` (Linux /proc)."""
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:  # it exited
        return False
    owned = set()
    for fd in descriptors:
        with contextlib.suppress(OSError):  # closed while we looked
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                owned.add(link[8:-1])
    for row in table:
        fields = row.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.rpartition(":")[2], 16) == port and inode in owned:
            return True
    return False


class Mosquitto:
    """A private broker on a free port that a test can stop and restart."""

    def __init__(self, workdir: Path, extra_config: str = "") -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            unavailable("mosquitto binary not found")
        self.binary = binary
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        self.extra_config = extra_config
        self._write_config()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False  # once: a restart keeps the port
        self.log = workdir / "mosquitto.log"

    def _write_config(self) -> None:
        self._generated = (
            f"listener {self.port} 127.0.0.1\n"
            "persistence false\n"
            f"{self.extra_config or 'allow_anonymous true'}\n"
        )
        self.config.write_text(self._generated)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the broker and wait until it says it runs. A first start whose port was
        taken meanwhile moves to another port; a restart (clients reconnect to its port)
        or a config a test wrote itself keeps the port and fails if it cannot have it."""
        movable = not self.started and self.config.read_text() == self._generated
        tries = 5 if movable else 1
        for attempt in range(1, tries + 1):
            if self._launch():
                self.started = True
                return
            if attempt < tries:
                self.port = free_port()
                self._write_config()
        raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}")

    def _launch(self) -> bool:
        """True once our own process listens on the port (so a test never talks to
        someone else's broker there); False if it could not bind."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            said = self.log.read_bytes()[offset:].decode(errors="replace")
            if self.proc.poll() is not None:
                self.proc = None
                if "Address already in use" in said:
                    return False
                raise RuntimeError(f"mosquitto exited: {said[-2000:]}")
            if listens(self.proc.pid, self.port):
                return True
            time.sleep(0.05)
        self.stop(kill=True)  # never leave a broker behind a failed start
        raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}")

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
