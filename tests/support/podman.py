"""Real podman for the tests: a private image store, images made locally from a
busybox-static root (nothing is pulled from the internet) and a real registry
(Debian's `docker-registry`) on a loopback port.

    rig = PodmanRig.create(tmp)            # containers.conf, storage.conf, registries.conf
    with Registry(tmp / "registry") as registry:
        rig.trust(registry)                # plain HTTP on loopback
        digest = rig.push(rig.image("nav:1", cmd=[...]), registry.repo("nav"), "1")

`rig.env` (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, CONTAINERS_REGISTRIES_CONF) is what a
vehicle would put in the agent's service unit: podman through runc with cgroupfs (crun
fails on this machine's hybrid cgroups), no default ulimits.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pytest

from tests.conftest import free_port, unavailable

BASE = "localhost/muto-test-base:1"
# One home for podman's configuration on hosts like these: the one `make image` uses.
CONTAINERS_CONF = (
    Path(__file__).resolve().parents[2] / "deploy" / "podman" / "containers.conf"
).read_text()


def require_podman() -> None:
    for binary in ("podman", "runc", "docker-registry"):
        if shutil.which(binary) is None:
            unavailable(f"{binary} not installed (apt-get install podman runc docker-registry)")
    if _busybox() is None:
        unavailable("busybox-static not installed")


def _busybox() -> Path | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        # A dynamic busybox names its loader in .interp, near the start of the file.
        if path.exists() and b"ld-linux" not in path.read_bytes()[:4096]:
            return path
    return None


@dataclass
class PodmanRig:
    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path, driver: str = "vfs") -> PodmanRig:
        """A store under `root`: vfs (works anywhere), or overlay where the kernel
        mounts it on `root`'s filesystem (much faster for images of real size)."""
        require_podman()
        root.mkdir(parents=True, exist_ok=True)
        (root / "containers.conf").write_text(CONTAINERS_CONF)
        # conmon's sockets live under runroot and their paths are length-limited: with a
        # runroot as deep as pytest's tmp dirs the restart policy silently never restarts.
        runroot = tempfile.mkdtemp(prefix="muto-podman-", dir="/tmp")
        (root / "storage.conf").write_text(
            f'[storage]\ndriver = "{driver}"\nrunroot = "{runroot}"\ngraphroot = "{root}/graph"\n'
        )
        (root / "registries.conf").write_text("unqualified-search-registries = []\n")
        rig = cls(
            root,
            {
                "CONTAINERS_CONF": str(root / "containers.conf"),
                "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
                "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
            },
        )
        rig._import_base()
        return rig

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {done.stderr.strip()}")
        return done

    def _import_base(self) -> None:
        """A busybox-static root with every applet linked: a ~1 MB base image."""
        busybox = _busybox()
        assert busybox is not None
        tree = self.root / "base-root"
        (tree / "bin").mkdir(parents=True, exist_ok=True)
        (tree / "tmp").mkdir(exist_ok=True)
        shutil.copy2(busybox, tree / "bin" / "busybox")
        applets = subprocess.run(
            [str(busybox), "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        for applet in applets:
            link = tree / "bin" / applet
            if applet != "busybox" and not link.exists():
                link.symlink_to("busybox")
        tar = self.root / "base.tar"
        with tarfile.open(tar, "w") as archive:
            archive.add(tree, arcname=".")
        self.podman(
            "import", "--change", "ENV PATH=/bin", "--change", 'CMD ["/bin/sh"]', str(tar), BASE
        )

    def image(
        self,
        tag: str,
        *,
        cmd: Sequence[str],
        healthcheck: str | None = None,
        files: dict[str, str] | None = None,
    ) -> str:
        """`localhost/<tag>` built FROM the base (`podman build`, docker format so a
        HEALTHCHECK is kept); `files` are written into the image."""
        context = self.root / "build" / tag.replace(":", "-").replace("/", "-")
        context.mkdir(parents=True, exist_ok=True)
        lines = [f"FROM {BASE}"]
        for index, (path, text) in enumerate(sorted((files or {}).items())):
            (context / f"f{index}").write_text(text)
            lines.append(f"COPY f{index} {path}")
        if healthcheck is not None:
            lines.append(f"HEALTHCHECK --interval=1h --timeout=10s CMD {healthcheck}")
        quoted = ", ".join(f'"{arg}"' for arg in cmd)
        lines.append(f"CMD [{quoted}]")
        (context / "Containerfile").write_text("\n".join(lines) + "\n")
        self.podman("build", "--format", "docker", "-q", "-t", f"localhost/{tag}", str(context))
        return f"localhost/{tag}"

    def trust(self, registry: Registry) -> None:
        """Let podman talk plain HTTP to the loopback registry (as a vehicle's
        registries.conf would for a depot mirror)."""
        (self.root / "registries.conf").write_text(
            "unqualified-search-registries = []\n"
            f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n'
        )

    def push(self, image: str, repo: str, tag: str) -> str:
        """Push `image` to `repo:tag`; the manifest digest the registry stores."""
        digest_file = self.root / "pushed.digest"
        self.podman(
            "push", "--tls-verify=false", "--digestfile", str(digest_file), image, f"{repo}:{tag}"
        )
        return digest_file.read_text().strip()

    def containers(self, label: str) -> list[tuple[str, str, str]]:
        """(name, state, image digest) of every container carrying `label`."""
        listed = self.podman("ps", "-a", "--filter", f"label={label}", "--format", "json")
        found = []
        for container in json.loads(listed.stdout or "[]"):
            # The JSON State is bare ("running"); the template's reads "Up 2 seconds ago".
            name, state = container["Names"][0], container["State"]
            inspected = self.podman(
                "inspect", "--type", "container", "--format", "{{.ImageDigest}}", name, check=False
            )
            if inspected.returncode == 0:  # else replaced since it was listed
                found.append((name, state, inspected.stdout.strip()))
        return found

    def running(self, label: str) -> list[tuple[str, str]]:
        return [(n, d) for n, s, d in self.containers(label) if s == "running"]

    def remove_all(self) -> None:
        self.podman("rm", "--all", "--force", "--time", "0", check=False)

    def close(self) -> None:
        """Remove every container, then the short-lived runroot outside `root`."""
        self.remove_all()
        text = (self.root / "storage.conf").read_text()
        runroot = text.split('runroot = "', 1)[1].split('"', 1)[0]
        shutil.rmtree(runroot, ignore_errors=True)

    def forget_image(self, ref: str) -> None:
        self.podman("rmi", "--force", ref, check=False)


class Registry:
    """`docker-registry serve` on a free loopback port, storing under `root`."""

    def __init__(self, root: Path) -> None:
        require_podman()
        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "config.yml"
        self.config.write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            f"http:\n  addr: {self.host}\n"
        )
        self.log = root / "registry.log"

    def repo(self, name: str) -> str:
        return f"{self.host}/{name}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["docker-registry", "serve", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None

    def blob(self, digest: str) -> Path:
        """Where the registry keeps the bytes it serves for `digest`."""
        hexa = digest.removeprefix("sha256:")
        return self.root / "data/docker/registry/v2/blobs/sha256" / hexa[:2] / hexa / "data"

    def __enter__(self) -> Registry:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# What the stacks in the tests run: ready once /tmp/ready exists; SIGTERM ends them at once
# (a shell as PID 1 ignores signals it does not trap).
SERVE = "trap 'exit 0' TERM; touch /tmp/ready; while :; do sleep 0.2; done"
NEVER_READY = "trap 'exit 0' TERM; while :; do sleep 0.2; done"
READY_CHECK = "test -f /tmp/ready"


@dataclass(frozen=True)
class Pushed:
    repo: str  # host:port/name
    digest: str

    @property
    def pinned(self) -> str:
        return f"{self.repo}@{self.digest}"


@dataclass
class PodmanWorld:
    """One image store and one registry for a test session, with the images the tests run."""

    rig: PodmanRig
    registry: Registry
    good: Pushed  # serves, healthcheck passes
    never_ready: Pushed  # runs, healthcheck never passes
    crashing: Pushed  # exits 3 at once (podman restarts it)
    tampered: Pushed  # the registry serves other bytes under this digest
    other_stack: Pushed  # serves, another repository

    def label(self, workdir: Path) -> str:
        return f"muto.runtime={workdir.resolve()}"


def make_world(root: Path) -> PodmanWorld:
    rig = PodmanRig.create(root / "podman")
    registry = Registry(root / "registry")
    registry.start()
    rig.trust(registry)

    def push(tag: str, script: str, repo: str, healthcheck: str | None = READY_CHECK) -> Pushed:
        image = rig.image(f"{repo}:{tag}", cmd=["/bin/sh", "-c", script], healthcheck=healthcheck)
        return Pushed(registry.repo(repo), rig.push(image, registry.repo(repo), tag))

    world = PodmanWorld(
        rig=rig,
        registry=registry,
        good=push("1", SERVE, "nav"),
        never_ready=push("2", NEVER_READY, "nav"),
        crashing=push("3", "exit 3", "nav", healthcheck=None),
        tampered=push("4", SERVE + " # 4", "nav"),
        other_stack=push("1", SERVE + " # perception", "perception"),
    )
    # The registry now answers the tampered digest with another manifest's bytes.
    world.registry.blob(world.tampered.digest).write_bytes(
        world.registry.blob(world.good.digest).read_bytes()
    )
    # Only what the tests pull by digest may be in the store: drop the local builds.
    for line in rig.podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split():
        if line.startswith(("localhost/nav", "localhost/perception", registry.host)):
            rig.forget_image(line)
    return world


@pytest.fixture(scope="session", name="podman_world")
def podman_world_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanWorld]:
    world = make_world(tmp_path_factory.mktemp("podman-world"))
    try:
        yield world
    finally:
        world.rig.close()
        world.registry.stop()


@pytest.fixture(name="podman_env")
def podman_env_fixture(
    podman_world: PodmanWorld, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PodmanWorld]:
    """The world's podman configuration in this process's environment (the runtime, and
    agents started from here, inherit it); every container removed afterwards."""
    for key, value in podman_world.rig.env.items():
        monkeypatch.setenv(key, value)
    try:
        yield podman_world
    finally:
        podman_world.rig.remove_all()
