"""`muto agent run` on a data dir it cannot write (read-only, full, not a directory):
one line naming the file and what the OS said, exit 2, no traceback; a full disk (or
quota) says INSUFFICIENT_DISK (docs/agent.md, exit codes).

Review defect 6a: a read-only data dir printed a traceback ending `OSError: [Errno 30]
Read-only file system: '.../.token.xxxx.tmp'` and exited 1."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from muto.agent import compose, config_file
from muto.cli import main
from muto.domain.wire import encode
from muto.trust import KeySet, Signer, TrustConfig
from tests.support.agent_cli import refused, run_agent


def test_a_data_dir_that_is_not_a_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").touch()
    data = tmp_path / "afile" / "data"
    line = refused(run_agent(data), str(data), os.strerror(errno.ENOTDIR))
    assert line.startswith("muto agent: cannot start: ")


def provisioning(tmp_path: Path) -> list[str]:
    """`muto agent run` arguments for a first start: a trust file and a token file."""
    keys = KeySet(keys=[Signer.generate().public_pem])
    trust = tmp_path / "trust.json"
    trust.write_bytes(encode(TrustConfig(release_keys=keys, control_plane_keys=keys)))
    token = tmp_path / "token"
    token.write_text("secret")
    data = tmp_path / "data"
    return [
        *("--vehicle-id", "car-1", "--data-dir", str(data)),
        *("--trust", str(trust), "--token-file", str(token)),
    ]


def refuse_writes(code: int) -> Any:
    """An atomic_write whose file system refuses with `code`, naming its temp file."""

    def write(path: Path, *args: object) -> None:
        raise OSError(code, os.strerror(code), str(path.with_name(f".{path.name}.x1y2.tmp")))

    return write


@pytest.mark.parametrize(
    ("code", "disk_full"), [(errno.EROFS, False), (errno.ENOSPC, True), (errno.EDQUOT, True)]
)
def test_a_data_dir_that_takes_no_file_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    code: int,
    disk_full: bool,
) -> None:
    monkeypatch.setattr(compose, "atomic_write", refuse_writes(code))  # the token's
    assert main(["agent", "run", *provisioning(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert str(tmp_path / "data" / ".token.x1y2.tmp") in line and os.strerror(code) in line
    assert line.startswith("muto agent: INSUFFICIENT_DISK: " if disk_full else "muto agent: ")
    assert ("INSUFFICIENT_DISK" in line) is disk_full


def test_a_start_that_cannot_write_the_agent_config_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last write of start-up (agent-config.json, after the journal is open)."""
    monkeypatch.setattr(config_file, "atomic_write", refuse_writes(errno.ENOSPC))
    assert main(["agent", "run", *provisioning(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("muto agent: INSUFFICIENT_DISK: cannot start: ")
    assert str(tmp_path / "data" / ".agent-config.json.x1y2.tmp") in line


def test_a_failed_write_that_names_no_file_names_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """os.write on a full file system says ENOSPC and no file name."""

    def write(path: Path, *args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(compose, "atomic_write", write)
    assert main(["agent", "run", *provisioning(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"muto agent: INSUFFICIENT_DISK: cannot start: data dir {tmp_path / 'data'}: "
        f"{os.strerror(errno.ENOSPC)}"
    )
