"""The servers the API bench loads: `muto cloud serve` as operators run it, the trivial
endpoint (the baseline), and the CLI's app with or without its request metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from muto.cloud.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(command: list[str], log: Path, pids: list[int] | None = None) -> Iterator[str]:
    """A server process on a free port, until SIGTERM; yields its base URL (and appends
    its pid to `pids`, for reading its CPU time)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTO_")}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    if pids is not None:
        pids.append(proc.pid)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def muto_server(settings: Settings) -> list[str]:
    command = [sys.executable, "-m", "muto.cli", "cloud", "serve", "--no-mqtt"]
    command += ["--host", "127.0.0.1", "--data-dir", str(settings.data_dir)]
    return command + (["--database-url", settings.database_url] if settings.database_url else [])


BASELINE_APP = """
import sys, uvicorn
from datetime import UTC, datetime
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def healthz(request):
    return JSONResponse({"data": {"status": "ready"}, "metadata": {},
                         "timestamp": datetime.now(UTC).isoformat()})

app = Starlette(routes=[Route("/healthz", healthz)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[-1]), log_level="warning",
            access_log=False)
"""


def baseline_server() -> list[str]:
    return [sys.executable, "-c", BASELINE_APP]


# `muto cloud serve` as its CLI builds it (access log on, rollout controller, but no
# per-token rate limit), with the request instrumentation on or taken out: the only
# difference between the two servers.
INSTRUMENTED_APP = """
import logging, sys, uvicorn
from pathlib import Path
from muto.cloud.api.app import create_app
from muto.cloud.controller import controller_factory
from muto.cloud.settings import Settings

data_dir, database_url, metrics, port = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[-1]
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
# No per-token rate limit: a small fleet polling ~20,000 times a second is over a
# vehicle's 5 requests/s, and the 429s would be measured instead of the polls.
settings = Settings(data_dir=Path(data_dir), database_url=database_url or None, mqtt_url=None,
                    vehicle_rate_per_s=0.0)
app = create_app(settings, extensions=[controller_factory])
if metrics == "off":
    app.metrics = None  # the edge keeps no request metrics
uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)
"""


def instrumented_server(settings: Settings, metrics: str) -> list[str]:
    database = settings.database_url or ""
    return [sys.executable, "-c", INSTRUMENTED_APP, str(settings.data_dir), database, metrics]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
