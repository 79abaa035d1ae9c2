"""Orphans: what an agent killed with SIGKILL leaves running is reaped by the next runtime
on its workdir, and nothing that cannot be proven to be the runtime's own is signalled.
Real processes throughout; no process outlives a test."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from muto.agent.runtime.group_ledger import (
    FILE,
    MARK_ENV,
    GroupLedger,
    LedgerDocument,
    StartedGroup,
)
from muto.agent.runtime.process import ProcessRuntime
from muto.agent.runtime.procfs import ProcessEntry, boot_id, read_entry, signal_process
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import ArtifactType, HealthModel, Launch, StackRelease
from muto.domain.wire import encode
from tests.support import subreaper
from tests.support.releases import stack_release
from tests.support.runtime_kit import (
    PYTHON,
    artifact_for,
    cache_of,
    make_archive,
    pid_alive,
)
from tests.support.subreaper import INIT

ROOT = Path(__file__).resolve().parents[2]

# The stack: a leader that starts a child in its group, then both sleep.
APP = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
with open("pids", "a") as f:
    f.write(f"{os.getpid()} {child.pid}\\n")
open("ready", "w").close()
time.sleep(300)
"""
READY = [PYTHON, "-c", "import os, sys; sys.exit(0 if os.path.exists('ready') else 1)"]

# An agent in miniature: apply the release, wait until it is ready, then die as `kill -9`
# would kill it, leaving the stack's process group behind.
AGENT = """
import asyncio, os, signal, sys
from pathlib import Path
from muto.agent.runtime.process import ProcessRuntime
from muto.domain.release import StackRelease
from muto.domain.wire import decode
workdir, release_file, archive = sys.argv[1:]
release = decode(Path(release_file).read_bytes(), StackRelease)
async def main():
    runtime = ProcessRuntime(Path(workdir), poll_sec=0.02)
    await runtime.apply(release, {release.artifacts[0].digest: Path(archive)})
    await runtime.wait_ready(release.health_model)
    os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""


def stack(tmp_path: Path) -> tuple[StackRelease, Path]:
    archive = make_archive(tmp_path / "nav.tar.gz", {"app.py": APP})
    rel = stack_release(
        "nav",
        "1.0.0",
        [artifact_for(archive, ArtifactType.ARCHIVE)],
        launch=Launch(command=[PYTHON, "app.py"]),
        health=HealthModel(readiness_probe=READY, readiness_timeout_sec=30),
    )
    return rel, archive


def family(workdir: Path) -> list[int]:
    """Every pid the stack's runs wrote, leaders and children, oldest run first."""
    (pids,) = workdir.glob("releases/nav@1.0.0-*/pids")
    return [int(pid) for pid in pids.read_text().split()]


def sleeper(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A process of our own that leads its own group, like a stack's leader."""
    return subprocess.Popen(
        [PYTHON, "-c", "import time; time.sleep(300)"], start_new_session=True, env=env
    )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def write_ledger(workdir: Path, *groups: StartedGroup, boot: str | None = None) -> str:
    mark = "0123456789abcdef" * 2
    document = LedgerDocument(mark=mark, boot=boot or boot_id(), groups=groups)
    workdir.mkdir(parents=True, exist_ok=True)
    GroupLedger(workdir / FILE, document).save()
    return mark


def test_a_stack_left_by_a_killed_agent_is_reaped_and_not_started_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workdir = tmp_path / "runtime"
    rel, archive = stack(tmp_path)
    (tmp_path / "release.json").write_bytes(encode(rel))
    init = subprocess.Popen(
        [PYTHON, "-c", INIT, PYTHON, "-c", AGENT, str(workdir), str(tmp_path / "release.json"),
         str(archive)],
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    orphans: list[ProcessEntry] = []
    try:
        assert init.stdout is not None
        assert init.stdout.readline().strip() == b"-9"  # the agent is gone, SIGKILLed
        orphans = [e for e in map(read_entry, family(workdir)) if e is not None and e.alive]
        assert len(orphans) == 2  # the stack outlived its agent: leader and child

        caplog.set_level(logging.WARNING, "muto.agent.runtime")
        runtime = ProcessRuntime(workdir, poll_sec=0.02, grace_sec=5)
        assert init.wait(timeout=60) == 0  # its last descendant is gone, and reaped
    finally:
        subreaper.close(init)
        for entry in orphans:  # only if the test failed
            signal_process(entry, signal.SIGKILL)
    for pid in (e.pid for e in orphans):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert (
        f"reaped nav@1.0.0 left running by an agent that died: process group {orphans[0].pid}"
        in (caplog.text)
    )
    assert GroupLedger.read(workdir / FILE) is not None

    async def restore() -> None:  # what the next agent does: start the journal's release
        try:
            await runtime.apply(rel, cache_of(archive))
            await runtime.wait_ready(rel.health_model)
            every = family(workdir)
            assert [pid for pid in every if pid_alive(pid)] == every[2:]  # one copy
        finally:
            await runtime.stop()

    asyncio.run(restore())


@pytest.mark.parametrize("problem", ["recycled-pid", "earlier-boot"])
def test_a_process_that_does_not_match_its_record_is_never_signalled(
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
    caplog: pytest.LogCaptureFixture,
    problem: str,
) -> None:
    bystander = sleeper()
    procs.append(bystander)
    entry = read_entry(bystander.pid)
    assert entry is not None
    start, boot = entry.start, None
    if problem == "recycled-pid":
        start -= 1  # the recorded leader started earlier: this pid is someone else now
    else:
        boot = "another-boot"  # start times restart at every boot: they prove nothing
    group = StartedGroup(release="nav@1.0.0", pgid=bystander.pid, start=start)
    write_ledger(tmp_path / "runtime", group, boot=boot)
    caplog.set_level(logging.WARNING, "muto.agent.runtime")

    ProcessRuntime(tmp_path / "runtime", grace_sec=0.2)

    assert bystander.poll() is None and pid_alive(bystander.pid)
    assert f"process group {bystander.pid} (recorded for nav@1.0.0)" in caplog.text
    ledger = GroupLedger.read(tmp_path / "runtime" / FILE)
    assert ledger is not None and ledger.groups == () and ledger.boot == boot_id()


def test_a_process_carrying_the_mark_is_reaped_though_never_recorded(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    # An agent killed between starting a group and recording it leaves only the mark.
    mark = write_ledger(tmp_path / "runtime")
    env = {**os.environ, MARK_ENV: mark, "MUTO_RELEASE": "nav@2.0.0"}
    marked, other = sleeper(env=env), sleeper(env={**env, MARK_ENV: "another-workdir"})
    procs += [marked, other]
    caplog.set_level(logging.WARNING, "muto.agent.runtime")

    ProcessRuntime(tmp_path / "runtime", grace_sec=5)

    assert marked.wait(timeout=30) == -signal.SIGTERM
    assert other.poll() is None
    assert f"reaped nav@2.0.0 left running by an agent that died: process group {marked.pid}" in (
        caplog.text
    )


def test_a_recorded_group_that_ignores_sigterm_is_killed_after_the_grace(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    # Neither carries the mark (a launcher may replace its children's environment): the
    # leader's fingerprint alone proves the whole group.
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    leader = subprocess.Popen(
        [PYTHON, "-c", stubborn + "import subprocess, sys; "
         f"c = subprocess.Popen([sys.executable, '-c', {stubborn + 'time.sleep(300)'!r}]); "
         "print(c.pid, flush=True); time.sleep(300)"],
        start_new_session=True, stdout=subprocess.PIPE,
    )  # fmt: skip
    procs.append(leader)
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    leader.stdout.close()
    entry = read_entry(leader.pid)
    assert entry is not None
    write_ledger(tmp_path / "runtime", StartedGroup(release="nav@1.0.0", pgid=leader.pid,
                                                    start=entry.start))  # fmt: skip

    ProcessRuntime(tmp_path / "runtime", grace_sec=0.2)

    assert leader.wait(timeout=30) == -signal.SIGKILL
    assert not pid_alive(child)


def test_the_ledger_follows_every_group_the_runtime_starts_and_stops(tmp_path: Path) -> None:
    workdir = tmp_path / "runtime"
    rel, archive = stack(tmp_path)
    runtime = ProcessRuntime(workdir, poll_sec=0.02, grace_sec=2, backoff_sec=0.01)

    def groups() -> list[tuple[str, int]]:
        ledger = GroupLedger.read(workdir / FILE)
        assert ledger is not None
        return [(g.release, g.pgid) for g in ledger.groups]

    async def body() -> None:
        await runtime.apply(rel, cache_of(archive))
        await runtime.wait_ready(rel.health_model)
        leader = family(workdir)[0]
        assert groups() == [("nav@1.0.0", leader)]
        os.kill(leader, signal.SIGKILL)  # the supervisor restarts it: a new group
        await runtime.wait_ready(rel.health_model)
        for _ in range(1000):
            if len(family(workdir)) == 4:
                break
            await asyncio.sleep(0.02)
        assert groups() == [("nav@1.0.0", family(workdir)[2])]
        await runtime.stop()
        assert groups() == []

    asyncio.run(body())


def test_an_unreadable_ledger_refuses_to_start_the_runtime(tmp_path: Path) -> None:
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / FILE).write_text('{"schema": "muto.process-groups.v1"')
    with pytest.raises(ReasonError) as failure:
        ProcessRuntime(tmp_path / "runtime")
    assert failure.value.code == ReasonCode.APPLY_FAILED
    assert FILE in failure.value.detail


def test_the_mark_reaches_the_stack_and_its_probes(tmp_path: Path) -> None:
    marked = f"os.environ.get({MARK_ENV!r}) and os.path.exists('ready')"
    probe = [PYTHON, "-c", f"import os, sys; sys.exit(0 if {marked} else 1)"]
    rel, archive = stack(tmp_path)
    rel = msgspec.structs.replace(
        rel, health_model=HealthModel(readiness_probe=probe, readiness_timeout_sec=30)
    )
    runtime = ProcessRuntime(tmp_path / "runtime", poll_sec=0.02)

    async def body() -> None:
        try:
            await runtime.apply(rel, cache_of(archive))
            await runtime.wait_ready(rel.health_model)
            leader = read_entry(family(tmp_path / "runtime")[0], runtime.ledger.mark)
            assert leader is not None and leader.marked and leader.release == "nav@1.0.0"
        finally:
            await runtime.stop()

    asyncio.run(body())
