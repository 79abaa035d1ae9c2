"""The production topology's processes for tests: `muto cloud serve --role ...` on one
PostgreSQL database, each a child process a test can SIGTERM or kill -9."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from muto.sim.services import Haproxy
from tests.conftest import Mosquitto, free_port, unavailable
from tests.support.secured_broker import apply_shipped_config

MUTO = [sys.executable, "-m", "muto.cli"]
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"


class Serve:
    """`muto cloud serve` with a role, on a free port; its log in `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str,
        *,
        role: str | None = None,
        mqtt_url: str | None = None,
        name: str = "cloud",
        public_url: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.role = role
        self.mqtt_url = mqtt_url
        self.name = name
        self.public_url = public_url
        self.extra = extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    def cli(self, *args: str) -> str:
        """`muto cloud <args>` on the same store; its stdout."""
        done = subprocess.run(
            [*MUTO, "cloud", *args, *self.store_args()],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return done.stdout

    def store_args(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--database-url", self.database_url]

    def start(self, wait: str | None = "/livez") -> None:
        """Start it; with `wait`, until that path answers 200."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUTO_")}
        args = [*MUTO, "cloud", "serve", "--port", str(self.port)]
        args += ["--role", self.role] if self.role else []
        args += self.store_args()
        args += ["--mqtt-url", self.mqtt_url] if self.mqtt_url else ["--no-mqtt"]
        if self.public_url:
            args += ["--public-url", self.public_url]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*args, *self.extra], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        if wait:
            self.wait_ready(path=wait)

    def wait_ready(self, timeout: float = 90.0, path: str = "/livez") -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start: {self.tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal it and wait; its exit code (None if it was not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise
        code = self.proc.returncode
        self.proc = None
        return code

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def tracebacks(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [part[:600] for part in text.split("Traceback (most recent call last)")[1:]]


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
            with self._lock:
                self._open -= {source, sink}


def secured_mosquitto(workdir: Path, users: dict[str, str]) -> Mosquitto:
    """Mosquitto with the shipped config (deploy/mosquitto: no anonymous clients, the
    per-vehicle ACL), on a free port in `workdir`; users made by add-users.sh."""
    if shutil.which("mosquitto_passwd") is None:
        unavailable("mosquitto_passwd not found")
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(workdir)
    lines = "".join(f"{user} {password}\n" for user, password in users.items())
    subprocess.run(
        ["sh", str(DEPLOY / "add-users.sh"), str(workdir / "passwd")],
        input=lines.encode(),
        check=True,
    )
    apply_shipped_config(broker, workdir)
    return broker


def load_balancer(workdir: Path, apis: list[Serve]) -> Haproxy:
    """haproxy before `apis` (fails in CI, skips elsewhere, when it is not installed)."""
    if Haproxy.find() is None:
        unavailable("haproxy not found (apt-get install haproxy)")
    return Haproxy(workdir, {api.name: api.port for api in apis})
