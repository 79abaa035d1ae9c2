"""docs/guide.md runs as written: its `guide-test` blocks, in order, in one shell, with
a real Mosquitto, `muto cloud serve` and one `muto agent run` on the process runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.doc_script import blocks, run_walkthrough

DOC = Path(__file__).resolve().parents[2] / "docs" / "guide.md"
pytestmark = pytest.mark.mqtt


def guide_script() -> str:
    found = blocks(DOC, "guide-test")
    assert len(found) >= 5, "the guide's blocks lost their guide-test markers"
    return "\n".join(found)


def test_the_guide_runs_as_written(tmp_path: Path) -> None:
    tools = ("curl", "jq")
    lines = run_walkthrough(
        guide_script(), tmp_path, tools, ("cloud.log", "agent.log", "broker.log")
    )
    assert "hello@1.0.0" in lines  # the running release
    assert "hello from hello@1.0.0" in lines  # the stack's own output, from its log
    assert "info" in lines  # logLevel back to its default
    assert any(line.startswith("request refresh-") and ": ok, " in line for line in lines)
    assert any(line.startswith("active artifacts/sha256:") for line in lines)
    assert (tmp_path / "cloud" / "artifacts").is_dir()
