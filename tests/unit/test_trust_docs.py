"""docs/trust.md's CLI example runs as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from muto.cli import main
from muto.trust.releases import artifact_file_name

DOC = Path(__file__).parents[2] / "docs" / "trust.md"


def block(language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"no {language} block in {DOC}"
    return match.group(1)


def test_the_documented_commands_succeed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = block("yaml")
    Path("release.yaml").write_text(manifest)
    Path("dist").mkdir()
    for artifact in yaml.safe_load(manifest)["artifacts"]:
        (Path("dist") / artifact_file_name(artifact["ref"])).write_bytes(b"wheel")
    commands = [line[2:] for line in block("console").splitlines() if line.startswith("$ ")]
    assert len(commands) == 3
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "muto"
        assert main(argv[1:]) == 0, command
