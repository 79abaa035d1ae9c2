"""The control plane's container image (deploy/Containerfile), built by `make image`
(deploy/build-image.sh) and run as the Kubernetes manifests run it: an api and a worker
container from the one image, read-only root, unprivileged, the signing key mounted
read-only, on host networking against a fresh PostgreSQL database and a real Mosquitto.

No registry is reachable from the build machines, so the base is made here from Debian's
packages (mmdebstrap); `BASE=<image>` builds on another base instead (the public
python:3.11-slim-bookworm where a registry is reachable). The first build takes minutes:
`make test-image` runs this, `make test` does not. The store lives in the user's cache
(overlay, kept between runs), so a re-run reuses the base and every unchanged layer."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
import yaml

from muto.cloud.seed import demo_vehicles
from muto.domain.messages import Leaf, vehicle_topic
from tests.conftest import Mosquitto, free_port, unavailable
from tests.support.doc_script import blocks
from tests.support.podman import PodmanRig
from tests.support.processes import eventually

pytestmark = [pytest.mark.image, pytest.mark.postgres, pytest.mark.mqtt]

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploy.md"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "muto" / "image-test"
TAG = "localhost/muto-cloud:test"


@dataclass
class Image:
    rig: PodmanRig
    tag: str
    seconds: float  # this run's build, cache hits included


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    if not os.environ.get("BASE") and shutil.which("mmdebstrap") is None:
        unavailable("mmdebstrap not installed (apt-get install mmdebstrap), and no BASE image")
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one run at a time in the shared store
        rig = PodmanRig.create(CACHE / "podman", driver=storage_driver(CACHE))
        try:
            yield build(rig)
        finally:
            rig.close()


def storage_driver(path: Path) -> str:
    """overlay (a build in a minute or two), unless `path` is itself on overlayfs (CI in a
    container), where only vfs works: every layer a full copy, several times slower."""
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    _, fstype = max(
        ((point, kind) for _, point, kind, *_ in mounts if path.is_relative_to(point)),
        key=lambda found: len(found[0]),
    )
    return "vfs" if fstype == "overlay" else "overlay"


def build(rig: PodmanRig) -> Image:
    previous = rig.podman("image", "inspect", "--format", "{{.Id}}", TAG, check=False)
    started = time.monotonic()
    done = subprocess.run(
        ["make", "--no-print-directory", "-s", "image", f"IMAGE={TAG}"],
        env={**os.environ, **rig.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert done.returncode == 0, f"build failed:\n{done.stderr[-6000:]}"
    seconds = time.monotonic() - started
    built = done.stdout.split()[-1]
    # The image this replaced: its own layers go, the cached ones stay (bounded store).
    if previous.returncode == 0 and previous.stdout.strip() != built:
        rig.podman("rmi", previous.stdout.strip(), check=False)
    return Image(rig, TAG, seconds)


class Container:
    """A container the docs' blocks started, by name."""

    def __init__(self, image: Image, name: str, port: str) -> None:
        self.image = image
        self.name = name
        self.url = f"http://127.0.0.1:{port}"

    def logs(self) -> str:
        done = self.image.rig.podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        running = self.image.rig.podman(
            "inspect", "--format", "{{.State.Running}}", self.name, check=False
        )
        if running.stdout.strip() != "true":
            raise AssertionError(f"{self.name} is not running: {self.logs()[-3000:]}")
        return httpx.get(f"{self.url}{path}", timeout=5, **kwargs)

    def remove(self) -> None:
        self.image.rig.podman("rm", "--force", "--time", "0", self.name, check=False)


def shell(block: str, cwd: Path, env: dict[str, str]) -> str:
    """One of the docs' blocks in `bash -euo pipefail`: its stdout."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{block}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


async def retained_notify(broker: Mosquitto, vehicle_id: str) -> dict[str, Any] | None:
    """The vehicle's retained desired/notify, if the broker holds one."""
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe(vehicle_topic("default", vehicle_id, Leaf.DESIRED_NOTIFY), qos=1)
        try:
            async with asyncio.timeout(1.0):  # a retained message comes at once, or never
                async for message in client.messages:
                    payload = message.payload
                    assert isinstance(payload, bytes)
                    found: dict[str, Any] = json.loads(payload)
                    return found
        except TimeoutError:
            return None
    return None


@pytest.mark.timeout(1800)  # a first build: the Debian base, then every dependency from PyPI
def test_the_image_runs_the_api_and_the_worker_on_postgres_as_the_docs_say(
    image: Image, tmp_path: Path, postgres_url: str, mosquitto: Mosquitto
) -> None:
    print(f"build: {image.seconds:.1f} s")
    # The user the manifests run it as (runAsUser, fsGroup) is the image's own.
    ids = image.rig.podman("run", "--rm", "--entrypoint", "id", image.tag).stdout.split()
    for name in ("api-deployment.yaml", "worker-deployment.yaml"):
        pod = yaml.safe_load((ROOT / "deploy" / "kubernetes" / name).read_text())["spec"]
        context = pod["template"]["spec"]["securityContext"]
        assert ids[:2] == [f"uid={context['runAsUser']}(muto)", f"gid={context['fsGroup']}(muto)"]
    (run,), (stop,) = blocks(DOC, "image-run"), blocks(DOC, "image-stop")
    ports = {"API_PORT": str(free_port()), "WORKER_PORT": str(free_port())}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTO_")}
    env |= image.rig.env | ports
    env |= {"IMAGE": image.tag, "DATABASE_URL": postgres_url, "MQTT_URL": mosquitto.url}
    api = Container(image, "muto-api", ports["API_PORT"])
    worker = Container(image, "muto-worker", ports["WORKER_PORT"])
    try:
        shell(run, tmp_path, env)
        operator = (tmp_path / "operator.token").read_text().strip()
        eventually(lambda: api.get("/livez").status_code == 200, "the api alive")
        eventually(lambda: worker.get("/livez").status_code == 200, "the worker alive")
        ready = eventually(
            lambda: (r := api.get("/readyz")).status_code == 200 and r.json()["data"], "ready"
        )
        assert ready["role"] == "api" and ready["database"] is True
        duties = eventually(
            lambda: (
                (r := worker.get("/readyz")).status_code == 200
                and all((duties := r.json()["data"]["duties"]).values())
                and duties
            ),
            "the worker holding every duty",
        )
        assert set(duties) == {"projector", "controller", "notifier", "listener"}
        # spec/ made it into the image, beside the package.
        assert api.get("/openapi.yaml").content == (ROOT / "spec" / "api.yaml").read_bytes()
        operator_calls(api.url, operator, mosquitto)
        stopped = shell(stop, tmp_path, env)
        logs = {c.name: c.logs() for c in (api, worker)}
    finally:
        for container in (api, worker):
            container.remove()
    # SIGTERM drains and exits 0; 137 would be the SIGKILL after 30 s.
    exits = [line for line in stopped.splitlines() if " exited " in line]
    assert exits == ["muto-api exited 0", "muto-worker exited 0"], logs
    for name, said in logs.items():
        assert "Traceback" not in said, f"{name}: {said[-3000:]}"


def operator_calls(url: str, operator: str, mosquitto: Mosquitto) -> None:
    """The seeded fleet through the api container; a rollout whose canary the worker
    container notifies over MQTT, with the public URL it was given."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {operator}"}, timeout=30
    ) as http:
        listed = http.get("/vehicles", params={"limit": 500})
        assert listed.status_code == 200, listed.text
        seeded = {v.vehicle_id for v in demo_vehicles()}
        assert {v["vehicleId"] for v in listed.json()["data"]} == seeded
        body = {"selector": "model=vehicle-v3", "stack": "autonomy-core", "version": "1.1.0"}
        rollout = http.post("/rollouts", json=body)
        assert rollout.status_code == 201, rollout.text
        assert rollout.json()["data"]["state"] == "canary"

        def canary() -> dict[str, Any] | None:
            for vehicle in http.get("/vehicles", params={"limit": 500}).json()["data"]:
                if vehicle["desiredRelease"] == "autonomy-core@1.1.0":
                    return dict(vehicle)
            return None

        vehicle = eventually(canary, "a canary vehicle")
    notify = eventually(
        lambda: (
            (n := asyncio.run(retained_notify(mosquitto, vehicle["vehicleId"])))
            and n["revision"] == vehicle["desiredRevision"]
            and n
        ),
        "the worker's notify of the canary's new revision",
    )
    assert notify["url"].startswith("https://muto.example.com/")
