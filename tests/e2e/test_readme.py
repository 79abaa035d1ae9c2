"""The README's runnable block works as written: each line runs (with $DATA a temporary
directory and the port swapped for a free one), and the served API answers with the
seeded fleet for the printed token."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
MUTO = str(Path(sys.executable).parent / "muto")


def readme_block() -> list[str]:
    text = README.read_text()
    marker = text.index("<!-- readme-test")
    block = re.search(r"```bash\n(.*?)```", text[marker:], re.S)
    assert block, "the readme-test marker must precede a bash block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_block_runs(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    env = {**os.environ, "DATA": str(data)}
    token = ""
    server = None
    try:
        for line in readme_block():
            background = line.endswith("&")
            command = line.rstrip("&").strip().replace("$DATA", str(data))
            argv = shlex.split(command, posix=True)
            argv = [str(port) if a == "8080" else a for a in argv]
            assert argv[0] == "muto", line
            argv[0] = MUTO
            if background:
                server = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
                continue
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{line}: {done.stderr}"
            if "token create" in line:
                token = done.stdout.strip()
        assert server is not None and token
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        auth = {"Authorization": f"Bearer {token}"}
        rollout = httpx.get(f"{base}/rollouts/seed-rollout-1", headers=auth).json()["data"]
        assert rollout["state"] == "completed"
        vehicles = httpx.get(
            f"{base}/vehicles",
            params={"selector": "model=vehicle-v3 AND region=eu-west"},
            headers=auth,
        ).json()
        assert vehicles["metadata"]["total"] == 4
        assert httpx.get(f"{base}/vehicles").status_code == 401
    finally:
        if server is not None:
            server.terminate()
            assert server.wait(timeout=30) == 0
