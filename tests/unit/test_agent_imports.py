"""`muto agent run` on a vehicle loads the agent's code only: none of the cloud's modules
and none of the libraries only the cloud, the simulator or the operator's CLI use (they
cost a small vehicle computer memory; docs/performance.md, *Vehicle agent*)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from muto.agent.journal import Journal
from muto.domain.wire import encode
from muto.trust import KeySet, Signer, TrustConfig

# Runs the real entry point in a fresh interpreter; when it exits, writes what it imported
# (an entry of None is an import the agent refuses: muto/agent/cli.py).
DRIVER = """
import atexit, json, sys
from muto.cli import main
out = sys.argv.pop(1)
loaded = lambda: sorted(name for name, module in sys.modules.items() if module is not None)
atexit.register(lambda: open(out, "w").write(json.dumps(loaded())))
sys.exit(main(sys.argv[1:]))
"""
NOT_ON_A_VEHICLE = (
    "muto.cloud",
    "muto.projections",
    "muto.sim",
    "muto.audit",
    "muto.fleetctl",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "eventsourcing_sqlalchemy",
    "psycopg",
    "jinja2",
    "prometheus_client",  # only with --metrics-port
    # The agent's HTTP is h11 on asyncio streams (muto/agent/transport/exchange.py): httpx
    # with httpcore and anyio cost ~6 MiB; it is loaded only behind an HTTP(S)_PROXY.
    "httpx",
    "httpcore",
    "anyio",
    "rich",  # httpx's command-line client
    "click",
    "trio",  # httpcore's trio support
    # every key format, SSH keys, ciphers: ~0.8 MiB; muto.trust.keys reads Ed25519 PEM itself
    "cryptography.hazmat.primitives.serialization",
    # ~8 MiB with its own OpenSSL: it makes keys and signatures (the cloud, the CLI); the
    # agent checks signatures with libsodium (muto.trust.keys.verify)
    "cryptography",
)


def closed_port() -> int:
    """A local port nothing listens on: the agent's HTTP and MQTT attempts are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def passed_once(data: Path) -> bool:
    try:
        with Journal.read_only(data) as journal:
            return journal.state.position > 0 and journal.state.unfinished_runs == 0
    except Exception:  # not created yet, or its tables half-way
        return False


def test_agent_run_imports_none_of_the_clouds_modules(tmp_path: Path) -> None:
    data, out = tmp_path / "agent", tmp_path / "modules.json"
    port, trust = closed_port(), tmp_path / "trust.json"
    keys = KeySet(keys=[Signer.generate().public_pem])
    trust.write_bytes(encode(TrustConfig(release_keys=keys, control_plane_keys=keys)))
    argv = [sys.executable, "-c", DRIVER, str(out), "agent", "run", "--vehicle-id", "car-1",
            "--data-dir", str(data), "--cloud-url", f"http://127.0.0.1:{port}",
            "--mqtt-url", f"mqtt://127.0.0.1:{port}", "--poll-s", "1",
            "--trust", str(trust)]  # fmt: skip
    log = tmp_path / "agent.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while not passed_once(data):  # a whole pass: fetch (refused), plan, journal
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the agent never finished a pass"
            time.sleep(0.1)
        time.sleep(1.5)  # a poll and a reconnect attempt later
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    modules = json.loads(out.read_text())
    assert {"muto.agent.agent", "muto.trust.dsse", "h11", "aiomqtt"} <= set(modules)
    packages = tuple(p + "." for p in NOT_ON_A_VEHICLE)
    assert [m for m in modules if m in NOT_ON_A_VEHICLE or m.startswith(packages)] == []
