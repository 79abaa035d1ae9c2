"""A stack's logs are bounded: a chatty command's log is rotated under it, while it
writes, and the logs of a release the runtime prunes go with its directory."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import re
from pathlib import Path

import pytest

from muto.agent.runtime import supervisor as supervisor_module
from muto.agent.runtime.process import ProcessRuntime
from muto.agent.runtime.supervisor import Supervisor, rotate_log
from muto.domain.release import ArtifactType, HealthModel, Launch, StackRelease
from tests.support.releases import stack_release
from tests.support.runtime_kit import PYTHON, artifact_for, cache_of, make_archive
from tests.support.waits import until

CAP = 64 * 1024
LINES = 60_000  # about 13 times the cap
# Whole lines, one write each (as a line-buffered logger does); its last line once its log
# is back under the cap (so no rotation is under way to lose it), then quiet.
CHATTY = f"""
import os, time
for n in range({LINES}):
    os.write(1, b"line %08d\\n" % n)
while os.fstat(1).st_size >= {CAP}:
    time.sleep(0.01)
os.write(1, b"done\\n")
time.sleep(300)
"""
LINE = re.compile(rb"line (\d{8})")


def numbers(text: bytes) -> list[int]:
    """The line numbers in `text`, asserting every line is whole."""
    found = []
    for line in text.splitlines():
        if line == b"done":
            found.append(LINES)
            continue
        match = LINE.fullmatch(line)
        assert match is not None, f"not a whole line: {line!r}"
        found.append(int(match.group(1)))
    return found


def test_a_chatty_command_s_log_is_rotated_under_the_cap_keeping_the_newest_lines(
    tmp_path: Path,
) -> None:
    log = tmp_path / "nav@1.0.0-chatty.log"
    older = tmp_path / "nav@1.0.0-chatty.log.1"
    supervisor = Supervisor(
        [PYTHON, "-c", CHATTY],
        cwd=tmp_path,
        env=dict(os.environ),
        log_path=log,
        log_max_bytes=CAP,
        log_check_sec=0.02,
    )

    def settled() -> bool:  # all written, and the last look found the log under the cap
        both = (older.read_bytes() if older.exists() else b"") + log.read_bytes()
        return both.endswith(b"done\n") and log.stat().st_size < CAP

    async def main() -> None:
        await supervisor.start()
        try:
            await until(settled, "the chatty command done and its log under the cap")
            assert supervisor.alive and supervisor.restarts.count == 0  # never blocked nor killed
        finally:
            await supervisor.stop()

    asyncio.run(main())
    assert older.stat().st_size <= 2 * CAP  # the copy's own limit
    assert not older.with_name(older.name + ".tmp").exists()
    newer, kept = numbers(log.read_bytes()), numbers(older.read_bytes())
    # Each file is a run of consecutive lines, the older run first (a line written during
    # the emptying may be lost between them), and the newest line written is the last.
    for run in (kept, newer):
        assert all(n == m + 1 for m, n in itertools.pairwise(run))
    assert (kept + newer)[-1] == LINES
    assert not newer or newer[0] > kept[-1]
    assert len(kept) * len(b"line 00000000\n") > CAP - len(b"line 00000000\n")  # a cap's worth


def test_rotation_keeps_the_newest_whole_lines_and_the_writer_appends_on(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    lines = [b"line %08d\n" % n for n in range(100)]  # 14 bytes each
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # as the command holds it
    try:
        os.write(fd, b"".join(lines))
        assert rotate_log(log, 300)
        os.write(fd, b"after\n")
    finally:
        os.close(fd)
    # The newest 300 bytes, from the first line that starts inside them.
    assert (tmp_path / "a.log.1").read_bytes() == b"".join(lines[-21:])
    assert log.read_bytes() == b"after\n"
    assert not rotate_log(log, 300)  # under the cap: untouched


def test_a_rotation_the_disk_has_no_room_for_still_empties_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"x\n" * 1000)

    def disk_full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(supervisor_module, "_copy_newest", disk_full)
    with pytest.raises(OSError):
        rotate_log(log, 100)
    assert log.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log"]


def say_release(tmp_path: Path, version: str) -> tuple[StackRelease, dict[str, Path]]:
    """A release whose command prints its version once, then serves."""
    archive = make_archive(
        tmp_path / f"say-{version}.tar.gz",
        {"say.py": f"import time\nprint('{version}', flush=True)\ntime.sleep(300)\n"},
    )
    release = stack_release(
        "say",
        version,
        [artifact_for(archive, ArtifactType.ARCHIVE)],
        launch=Launch(command=[PYTHON, "say.py"]),
        health=HealthModel(readiness_timeout_sec=20),
    )
    return release, cache_of(archive)


def test_the_logs_of_a_pruned_release_go_with_its_directory(tmp_path: Path) -> None:
    rt = ProcessRuntime(tmp_path / "runtime", poll_sec=0.02, grace_sec=2)
    a, b, c = (say_release(tmp_path, v) for v in ("1.0.0", "2.0.0", "3.0.0"))
    workdir = tmp_path / "runtime"

    def releases_in(folder: str) -> set[str]:  # no key here has a dash
        return {p.name.split("-", 1)[0] for p in (workdir / folder).iterdir()}

    async def main() -> None:
        try:
            for release, cache in (a, b):
                await rt.apply(release, cache)
                log = workdir / "logs" / f"{release.key}-{Path(PYTHON).name}.log"
                await until(lambda log=log: log.read_text().strip(), f"{release.key} logging")
            (workdir / "logs" / f"say@1.0.0-{Path(PYTHON).name}.log.1").write_text("older\n")
            assert releases_in("logs") == {"say@1.0.0", "say@2.0.0"}
            rt.keep_releases(["say@2.0.0"])  # A is no rollback target any more
            await rt.apply(*c)
        finally:
            await rt.stop()

    asyncio.run(main())
    assert releases_in("releases") == releases_in("logs") == {"say@2.0.0", "say@3.0.0"}
