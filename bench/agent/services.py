"""The services around a real agent: an MQTT broker, the cloud, an artifact server,
baseline processes."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from bench.agent.common import PYTHON, wait_for
from muto.domain.wire import encode
from muto.sim.services import MosquittoBroker, free_port, prepare_cloud, wait_for_port


@dataclass
class Cloud:
    url: str
    operator: str
    trust_file: Path
    signer: Any
    http: httpx.Client

    def call(self, method: str, path: str, body: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.operator}"}
        response = self.http.request(method, f"{self.url}{path}", json=body, headers=headers)
        response.raise_for_status()
        return response.json()["data"]


@contextmanager
def mqtt_broker(root: Path) -> Iterator[str]:
    """Mosquitto on a free loopback port (the broker a vehicle's agent talks to): its URL."""
    binary = MosquittoBroker.binary()
    if binary is None:
        raise RuntimeError("the agent bench needs mosquitto (apt-get install mosquitto)")
    port = free_port()
    config = root / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    with (root / "mosquitto.log").open("ab") as log:
        proc = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=log)
    try:
        wait_for_port(port)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def cloud_service(root: Path, mqtt_url: str) -> Iterator[Cloud]:
    """`muto cloud serve` with its MQTT bridge on a fresh SQLite data dir (prepare_cloud's
    keys)."""
    operator, trust, signer, release_pub = prepare_cloud(root)
    trust_file = root / "trust.json"
    trust_file.write_bytes(encode(trust))
    port = free_port()
    argv = [PYTHON, "-m", "muto.cli", "cloud", "serve", "--data-dir", str(root / "cloud"),
            "--port", str(port), "--mqtt-url", mqtt_url,
            "--release-key", str(release_pub)]  # fmt: skip
    with (root / "cloud.log").open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=30) as http:
            wait_for(lambda: healthy(http, url, proc), "the cloud")
            yield Cloud(url, operator, trust_file, signer, http)
    finally:
        proc.terminate()
        proc.wait(30)


def healthy(http: httpx.Client, url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise RuntimeError("the cloud exited; see cloud.log")
    try:
        return http.get(f"{url}/healthz").status_code == 200
    except httpx.TransportError:
        return False


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def artifact_server(directory: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=directory))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


SLEEP = "import time\nprint('ready', flush=True)\ntime.sleep(1e6)"
BASELINES = {
    "bare": SLEEP,
    # What `muto agent run --runtime process --mqtt-url URL` imports before it runs
    # (muto/agent/cli.py; the MQTT link's module when the agent wires it).
    "cli": "from muto.cli import build_parser\nbuild_parser('agent')\n"
    "from muto.agent.cli import skip_unused_optional_imports\nskip_unused_optional_imports()\n"
    "import muto.agent.compose, muto.agent.runtime.process, muto.agent.transport.mqtt\n" + SLEEP,
    "all": "from muto.cli import build_parser\nbuild_parser()\nimport muto.agent.compose\n" + SLEEP,
    "timers": "import asyncio\nprint('ready', flush=True)\n"
    "async def main():\n    while True:\n        await asyncio.sleep(5)\nasyncio.run(main())",
}


@contextmanager
def baseline_processes() -> Iterator[dict[str, int]]:
    """The baseline programs, started together, each past its imports: name -> pid."""
    procs = {
        name: subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE)
        for name, code in BASELINES.items()
    }
    try:
        for proc in procs.values():
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        yield {name: proc.pid for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
