"""The process runtime against real child processes and real archives."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from muto.agent.runtime.base import RuntimeAdapter
from muto.agent.runtime.process import ProcessRuntime
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import ArtifactType, HealthModel, Launch, StackRelease
from tests.support.releases import stack_release
from tests.support.runtime_contract import Built, RuntimeContract
from tests.support.runtime_kit import (
    PYTHON,
    artifact_for,
    cache_of,
    make_archive,
    make_tar_with,
    pid_alive,
)
from tests.support.waits import until

# One small program, told what to be by its first argument.
APP = """
import os, signal, subprocess, sys, time
mode = sys.argv[1]
with open("pids", "a") as f:
    f.write(f"{os.getpid()}\\n")
if mode == "crash" or (mode == "crash-once" and not os.path.exists("crashed")):
    open("crashed", "w").close()
    sys.exit(1)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal, time;"
    + ("signal.signal(signal.SIGTERM, signal.SIG_IGN);" if mode == "stubborn" else "")
    + "time.sleep(300)"])
with open("children", "a") as f:
    f.write(f"{child.pid}\\n")
open("ready", "w").close()
time.sleep(300)
"""

PROBE_READY = [PYTHON, "-c", "import os, sys; sys.exit(0 if os.path.exists('ready') else 1)"]
PROBE_NEVER = [PYTHON, "-c", "import sys; sys.exit(1)"]


def archived_release(
    tmp_path: Path,
    version: str,
    mode: str = "serve",
    health: HealthModel | None = None,
) -> tuple[StackRelease, dict[str, Path]]:
    archive = make_archive(
        tmp_path / f"overlay-{version}.tar.gz",
        {"app.py": APP, "VERSION": version, "share/nav/params.yaml": "rate: 10\n"},
    )
    rel = stack_release(
        "nav",
        version,
        [artifact_for(archive, ArtifactType.ARCHIVE)],
        launch=Launch(command=[PYTHON, "app.py", mode], env={"NAV_MODE": mode}),
        health=health,
    )
    return rel, cache_of(archive)


def runtime(
    tmp_path: Path, grace_sec: float = 2.0, backoff_sec: float = 0.01, max_backoff_sec: float = 0.05
) -> ProcessRuntime:
    return ProcessRuntime(
        tmp_path / "runtime",
        poll_sec=0.02,
        grace_sec=grace_sec,
        backoff_sec=backoff_sec,
        max_backoff_sec=max_backoff_sec,
    )


def pids(directory: Path, name: str = "pids") -> list[int]:
    path = directory / name
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def run_with(rt: ProcessRuntime, body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        try:
            await body()
        finally:
            await rt.stop()

    asyncio.run(main())


def test_runs_the_command_in_the_extracted_release_directory(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    rel, cache = archived_release(tmp_path, "1.0.0")

    async def body() -> None:
        await rt.apply(rel, cache)
        await rt.wait_ready(HealthModel(readiness_probe=PROBE_READY, readiness_timeout_sec=20))
        directory = rt.running_directory()
        assert directory is not None
        digest12 = rel.artifacts[0].digest.removeprefix("sha256:")[:12]
        assert directory == tmp_path / "runtime" / "releases" / f"nav@1.0.0-{digest12}"
        assert (directory / "share/nav/params.yaml").read_text() == "rate: 10\n"
        status = rt.status()
        assert (status.release, status.alive, status.restart_count) == ("nav@1.0.0", True, 0)
        assert not status.crash_looping

    run_with(rt, body)


def test_restarts_the_command_when_it_exits_and_counts_it(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    rel, cache = archived_release(tmp_path, "1.0.0", mode="crash-once")

    async def body() -> None:
        await rt.apply(rel, cache)
        await rt.wait_ready(HealthModel(readiness_probe=PROBE_READY, readiness_timeout_sec=20))
        directory = rt.running_directory()
        assert directory is not None
        assert len(pids(directory)) == 2
        assert rt.status().restart_count == 1
        assert rt.status().alive and not rt.status().crash_looping

    run_with(rt, body)


def test_crash_loop_is_detected_while_waiting_for_readiness(tmp_path: Path) -> None:
    health = HealthModel(crash_loop_restarts=3, crash_loop_window_sec=30, readiness_timeout_sec=60)
    rt = runtime(tmp_path)
    rel, cache = archived_release(tmp_path, "1.0.0", mode="crash", health=health)

    async def body() -> None:
        await rt.apply(rel, cache)
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(msgspec.structs.replace(health, readiness_probe=PROBE_READY))
        assert failure.value.code == ReasonCode.CRASH_LOOP_DETECTED
        status = rt.status()
        assert status.crash_looping and status.restart_count >= 3

    run_with(rt, body)


def test_restarts_outside_the_window_are_no_crash_loop(tmp_path: Path) -> None:
    # Backoff of 0.2 s between restarts, window of 0.1 s: never three within the window.
    health = HealthModel(crash_loop_restarts=3, crash_loop_window_sec=0.1)
    rt = runtime(tmp_path, backoff_sec=0.2, max_backoff_sec=0.2)
    rel, cache = archived_release(tmp_path, "1.0.0", mode="crash", health=health)

    async def body() -> None:
        await rt.apply(rel, cache)
        await until(lambda: rt.status().restart_count >= 4, "4 restarts", 20, interval=0.02)
        assert not rt.status().crash_looping

    run_with(rt, body)


def test_readiness_times_out_when_the_probe_never_passes(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    rel, cache = archived_release(tmp_path, "1.0.0")

    async def body() -> None:
        await rt.apply(rel, cache)
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(HealthModel(readiness_probe=PROBE_NEVER, readiness_timeout_sec=2))
        assert failure.value.code == ReasonCode.READINESS_TIMEOUT
        assert "probe exited 1" in failure.value.detail

    run_with(rt, body)


def test_a_probe_that_hangs_is_killed_at_the_deadline(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    rel, cache = archived_release(tmp_path, "1.0.0")
    hang = [PYTHON, "-c", "import os, time; open('probe.pid', 'w').write(str(os.getpid()));"
            "time.sleep(300)"]  # fmt: skip

    async def body() -> None:
        await rt.apply(rel, cache)
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(HealthModel(readiness_probe=hang, readiness_timeout_sec=1))
        assert failure.value.code == ReasonCode.READINESS_TIMEOUT
        directory = rt.running_directory()
        assert directory is not None
        assert not pid_alive(int((directory / "probe.pid").read_text()))

    run_with(rt, body)


def test_readiness_without_a_probe_is_the_process_being_alive(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    rel, cache = archived_release(tmp_path, "1.0.0")

    async def body() -> None:
        await rt.apply(rel, cache)
        await rt.wait_ready(HealthModel(readiness_timeout_sec=20))
        assert rt.status().alive

    run_with(rt, body)


@pytest.mark.parametrize("mode", ["serve", "stubborn"])
def test_stop_kills_the_whole_process_group(tmp_path: Path, mode: str) -> None:
    rt = runtime(tmp_path, grace_sec=0.5)
    rel, cache = archived_release(tmp_path, "1.0.0", mode=mode)

    async def body() -> None:
        await rt.apply(rel, cache)
        await rt.wait_ready(HealthModel(readiness_probe=PROBE_READY, readiness_timeout_sec=20))
        directory = rt.running_directory()
        assert directory is not None
        await until(
            lambda: bool(pids(directory, "children")), "children started", 20, interval=0.02
        )
        family = pids(directory) + pids(directory, "children")
        assert all(pid_alive(pid) for pid in family)
        await rt.stop()
        assert not any(pid_alive(pid) for pid in family)
        assert rt.status().release is None and not rt.status().alive

    run_with(rt, body)


def test_apply_of_b_replaces_a_and_reapplying_b_is_a_noop(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    a, cache_a = archived_release(tmp_path, "1.0.0")
    b, cache_b = archived_release(tmp_path, "2.0.0")
    c, cache_c = archived_release(tmp_path, "3.0.0")
    ready = HealthModel(readiness_probe=PROBE_READY, readiness_timeout_sec=20)

    async def body() -> None:
        await rt.apply(a, cache_a)
        await rt.wait_ready(ready)
        dir_a = rt.running_directory()
        assert dir_a is not None
        a_family = pids(dir_a) + pids(dir_a, "children")

        await rt.apply(b, cache_b)
        await rt.wait_ready(ready)
        dir_b = rt.running_directory()
        assert dir_b is not None and rt.status().release == "nav@2.0.0"
        assert not any(pid_alive(pid) for pid in a_family)
        b_leader = pids(dir_b)

        await rt.apply(b, cache_b)  # already running: nothing restarts
        assert pids(dir_b) == b_leader and rt.status().restart_count == 0

        await rt.apply(c, cache_c)  # keeps C and the B it replaced, prunes A
        assert not dir_a.exists() and dir_b.exists()

    run_with(rt, body)


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("/tmp/evil"),
        tarfile.TarInfo("../evil"),
        tarfile.TarInfo("share/../../evil"),
        _sym := tarfile.TarInfo("etc-link"),
        _deep := tarfile.TarInfo("share/nav/link"),
        _hard := tarfile.TarInfo("hard"),
        _dev := tarfile.TarInfo("null"),
    ],
    ids=[
        "absolute",
        "parent",
        "nested-parent",
        "symlink-absolute",
        "symlink-up",
        "hardlink",
        "dev",
    ],
)
def test_unsafe_archive_is_rejected_and_the_running_release_stays(
    tmp_path: Path, member: tarfile.TarInfo
) -> None:
    if member.name == "etc-link":
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif member.name == "share/nav/link":
        member.type, member.linkname = tarfile.SYMTYPE, "../../../outside"
    elif member.name == "hard":
        member.type, member.linkname = tarfile.LNKTYPE, "../outside"
    elif member.name == "null":
        member.type = tarfile.CHRTYPE
    rt = runtime(tmp_path)
    a, cache_a = archived_release(tmp_path, "1.0.0")
    evil = make_tar_with(tmp_path / "evil.tar.gz", member, b"x")
    b = stack_release("nav", "2.0.0", [artifact_for(evil, ArtifactType.ARCHIVE)], launch=a.launch)

    async def body() -> None:
        await rt.apply(a, cache_a)
        with pytest.raises(ReasonError) as failure:
            await rt.apply(b, cache_of(evil))
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert "unsafe archive" in failure.value.detail
        assert rt.status().release == "nav@1.0.0" and rt.status().alive
        releases = sorted(p.name for p in (tmp_path / "runtime" / "releases").iterdir())
        assert len(releases) == 2 and releases[0].startswith("nav@1.0.0-")
        assert releases[1] == releases[0] + ".files"  # A's file list; nothing of B
        assert not (tmp_path / "evil").exists() and not (tmp_path / "runtime" / "evil").exists()

    run_with(rt, body)


def test_links_inside_the_overlay_are_fine(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "o.tar.gz", {"app.py": APP, "lib/libnav.so.1": "elf"})
    with tarfile.open(archive, "r:gz") as tar:
        members = [(m, tar.extractfile(m)) for m in tar.getmembers()]
        contents = {m.name: f.read() if f else b"" for m, f in members}
    with tarfile.open(archive, "w:gz") as tar:
        import io

        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("share/nav/libnav.so")
        link.type, link.linkname = tarfile.SYMTYPE, "../../lib/libnav.so.1"
        tar.addfile(link)
    rel = stack_release(
        "nav",
        "1.0.0",
        [artifact_for(archive, ArtifactType.ARCHIVE)],
        launch=Launch(command=[PYTHON, "app.py", "serve"]),
    )
    rt = runtime(tmp_path)

    async def body() -> None:
        await rt.apply(rel, cache_of(archive))
        directory = rt.running_directory()
        assert directory is not None
        assert (directory / "share/nav/libnav.so").read_text() == "elf"

    run_with(rt, body)


def damage_release_directory(directory: Path, how: str) -> None:
    if how == "edited":
        (directory / "VERSION").write_text("9.9.9")
    elif how == "deleted":
        (directory / "share/nav/params.yaml").unlink()
    elif how == "mode":
        (directory / "app.py").chmod(0o600)
    elif how == "dir-replaced":
        shutil.rmtree(directory / "share")
        (directory / "share").symlink_to("/tmp")
    elif how == "no-file-list":  # as extracted by an agent without file lists, or lost
        (directory.parent / (directory.name + ".files")).unlink()


@pytest.mark.parametrize("how", ["edited", "deleted", "mode", "dir-replaced", "no-file-list"])
def test_a_kept_release_directory_that_changed_is_extracted_again_before_it_starts(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The rollback to A reuses A's kept directory only while it holds what A's archive put
    there; else it is extracted again from the cached archive, never started damaged."""
    rt = runtime(tmp_path)
    ready = HealthModel(readiness_probe=PROBE_READY, readiness_timeout_sec=20)
    a, cache_a = archived_release(tmp_path, "1.0.0", health=ready)
    b, cache_b = archived_release(tmp_path, "2.0.0", health=ready)

    async def body() -> None:
        await rt.apply(a, cache_a)
        dir_a = rt.running_directory()
        assert dir_a is not None
        await rt.apply(b, cache_b)
        damage_release_directory(dir_a, how)
        await rt.apply(a, cache_a)  # the rollback
        await rt.wait_ready(ready)
        assert rt.running_directory() == dir_a
        assert (dir_a / "VERSION").read_text() == "1.0.0"
        assert (dir_a / "share/nav/params.yaml").read_text() == "rate: 10\n"
        assert (dir_a / "app.py").stat().st_mode & 0o777 == 0o644
        assert f"{dir_a} differs from its archive" in caplog.text

    caplog.set_level(logging.WARNING, "muto.agent.runtime")
    run_with(rt, body)


def test_an_intact_kept_directory_is_reused_as_it_is(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    ready = HealthModel(readiness_probe=PROBE_READY, readiness_timeout_sec=20)
    a, cache_a = archived_release(tmp_path, "1.0.0", health=ready)
    b, cache_b = archived_release(tmp_path, "2.0.0", health=ready)

    async def body() -> None:
        await rt.apply(a, cache_a)
        await rt.wait_ready(ready)
        dir_a = rt.running_directory()
        assert dir_a is not None
        inode = (dir_a / "VERSION").stat().st_ino
        await rt.apply(b, cache_b)
        await rt.apply(a, cache_a)  # files the release wrote there (pids, ready) are its own
        assert (dir_a / "VERSION").stat().st_ino == inode  # not extracted again
        await until(lambda: len(pids(dir_a)) == 2, "the second run beside the first's record")

    run_with(rt, body)


def test_a_changed_directory_that_cannot_be_extracted_again_fails_with_a_reason(
    tmp_path: Path,
) -> None:
    rt = runtime(tmp_path)
    a, cache_a = archived_release(tmp_path, "1.0.0")
    b, cache_b = archived_release(tmp_path, "2.0.0")

    async def body() -> None:
        await rt.apply(a, cache_a)
        dir_a = rt.running_directory()
        assert dir_a is not None
        await rt.apply(b, cache_b)
        damage_release_directory(dir_a, "edited")
        (archive,) = cache_a.values()
        archive.write_bytes(b"\x1f\x8b not really gzip")  # the cache would catch this
        with pytest.raises(ReasonError) as failure:
            await rt.apply(a, cache_a)
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert "differs from its archive (VERSION is not the file" in failure.value.detail
        assert "cannot extract" in failure.value.detail
        assert rt.status().release == "nav@2.0.0" and rt.status().alive  # B untouched
        assert not dir_a.exists()  # nothing damaged is left to start by mistake

    run_with(rt, body)


def test_a_corrupt_archive_is_an_apply_failure(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b not really gzip")
    rel = stack_release(
        "nav",
        "1.0.0",
        [artifact_for(corrupt, ArtifactType.ARCHIVE)],
        launch=Launch(command=["true"]),
    )
    rt = runtime(tmp_path)

    async def body() -> None:
        with pytest.raises(ReasonError) as failure:
            await rt.apply(rel, cache_of(corrupt))
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert rt.status().release is None  # nothing half-unpacked runs

    run_with(rt, body)


@pytest.mark.parametrize("problem", ["no-command", "command-not-found"])
def test_apply_failures_carry_apply_failed(tmp_path: Path, problem: str) -> None:
    rel, cache = archived_release(tmp_path, "1.0.0")
    if problem == "no-command":
        rel = stack_release("nav", "1.0.0", rel.artifacts, launch=Launch())
    else:
        rel = stack_release(
            "nav", "1.0.0", rel.artifacts, launch=Launch(command=["./no-such-binary"])
        )
    rt = runtime(tmp_path)

    async def body() -> None:
        with pytest.raises(ReasonError) as failure:
            await rt.apply(rel, cache)
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert rt.status().release is None

    run_with(rt, body)


class TestProcessRuntimeContract(RuntimeContract):
    @pytest.fixture
    def runtime(self, tmp_path: Path) -> RuntimeAdapter:
        return runtime(tmp_path)

    @pytest.fixture
    def runnable(self, tmp_path: Path) -> Callable[[str], Built]:
        ready = HealthModel(readiness_probe=PROBE_READY, readiness_timeout_sec=20)
        return lambda version: archived_release(tmp_path, version, health=ready)

    @pytest.fixture
    def unpreparable(self, tmp_path: Path) -> Built:
        rel, _ = archived_release(tmp_path, "9.0.0")
        return rel, {}  # its archive is not in the cache
