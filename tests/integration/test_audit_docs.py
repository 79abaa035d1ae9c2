"""docs/audit.md's walk through the demo fleet runs as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from muto.cli import main

DOC = Path(__file__).parents[2] / "docs" / "audit.md"


def test_the_documented_commands_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("MUTO_DATA_DIR", "MUTO_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    match = re.search(r"```console\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"no console block in {DOC}"
    commands = [line[2:] for line in match.group(1).splitlines() if line.startswith("$ ")]
    assert {shlex.split(c)[2] for c in commands[1:]} == {"verify", "explain", "replay", "export"}
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "muto"
        assert main(argv[1:]) == 0, command
        out = capsys.readouterr().out
        if argv[1:3] == ["audit", "verify"]:
            assert out.startswith("intact: 59 events chained, head position 59")
    assert (tmp_path / "demo-at-40.db").exists()
    assert len((tmp_path / "demo.jsonl").read_text().splitlines()) == 59
