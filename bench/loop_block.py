"""Does a heavy query hold the event loop? /healthz latency while 8 clients list vehicles
with the heaviest selector the API accepts (#14 item 5). A figure for docs/reliability.md,
not a speed target (so not in `python -m bench`).

    python -m bench.loop_block [--source DIR] [--terms N] [--seconds S]

`--source` runs the server from another checkout's `muto` package (e.g. `git archive
main muto spec | tar -x -C /tmp/before`), to measure before and after a change.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.api.servers import free_port

VEHICLES = 500
CLIENTS = 8


def selector(terms: int) -> str:
    return " AND ".join(f"k{i}=v" for i in range(terms))


def start(source: Path, data: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTO_")}
    env["PYTHONPATH"] = str(source)
    common = ["--data-dir", str(data)]
    token = subprocess.run(
        [sys.executable, "-m", "muto.cli", "cloud", "token", "create", "--operator", *common],
        cwd=source,
        env=env,
        capture_output=True,
        check=True,
    ).stdout.split()[0]
    port = free_port()
    serve = ["cloud", "serve", "--no-mqtt", "--port", str(port), *common]
    log = (data / "server.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "muto.cli", *serve], cwd=source, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url + "/healthz", timeout=1)
            return proc, url, token.decode()
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.1)


def healthz_ms(url: str, seconds: float) -> list[float]:
    found = []
    with httpx.Client(timeout=60) as http:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            http.get(url + "/healthz").raise_for_status()
            found.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
    return found


def figures(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=20, method="inclusive")
    return (
        f"median {statistics.median(samples):.1f} ms, p95 {q[18]:.1f} ms, "
        f"max {max(samples):.1f} ms ({len(samples)} probes)"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--terms", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, token = start(args.source.resolve(), Path(tmp))
        headers = {"Authorization": f"Bearer {token}"}
        try:
            labels = {f"k{i}": "v" for i in range(max(args.terms, 32))}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
                for n in range(VEHICLES):
                    body = {"vehicleId": f"veh-{n:04d}", "labels": labels}
                    http.post("/vehicles", json=body).raise_for_status()
            idle = healthz_ms(url, 3)
            stop = threading.Event()
            answers: dict[int, int] = {}
            lock = threading.Lock()

            def load() -> None:
                params = {"selector": selector(args.terms), "limit": "1000"}
                with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
                    while not stop.is_set():
                        status = http.get("/vehicles", params=params).status_code
                        with lock:
                            answers[status] = answers.get(status, 0) + 1

            threads = [threading.Thread(target=load) for _ in range(CLIENTS)]
            for t in threads:
                t.start()
            time.sleep(1)
            busy = healthz_ms(url, args.seconds)
            stop.set()
            for t in threads:
                t.join()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    print(f"source {args.source}: {VEHICLES} vehicles, {CLIENTS} clients, {args.terms} terms")
    print(f"/healthz idle: {figures(idle)}")
    print(f"/healthz under load: {figures(busy)}; selector answers by status {answers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
