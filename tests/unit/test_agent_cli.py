"""`muto agent journal | trust | run`: docs/agent.md's journal examples run here."""

from __future__ import annotations

import asyncio
import json
import shlex
import sqlite3
from pathlib import Path

import pytest

from muto.agent import cli as agent_cli
from muto.agent.compose import RunOptions
from muto.agent.journal import Journal
from muto.agent.runtime import build_runtime
from muto.cli import main
from muto.domain.release import ArtifactType, Launch
from muto.domain.wire import decode
from muto.trust import Signer, TrustConfig
from tests.support.agent_rig import failing, make_rig, release
from tests.support.releases import stack_release
from tests.support.runtime_kit import PYTHON, artifact_for, cache_of, make_archive
from tests.support.waits import until

DOC = Path(__file__).parents[2] / "docs" / "agent.md"
DOC_DIR = "/var/lib/muto/agent"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A journal that converged on 1.0.0 at 12:00 and rolled back 2.0.0 at 12:01."""
    directory = tmp_path_factory.mktemp("agent")

    async def scenario() -> None:
        good, bad = release("1.0.0"), release("2.0.0")
        rig = make_rig(journal=Journal.open(directory), behaviours={bad.key: failing(apply=True)})
        await rig.agent.start(loop=False)
        rig.cloud.serve(rig.signers.bundle(good, 1))
        await rig.reconcile()
        await rig.deliver()
        rig.clock.advance(60)
        rig.cloud.serve(rig.signers.bundle(bad, 2))
        await rig.reconcile()
        await rig.deliver()
        rig.journal.close()

    asyncio.run(scenario())
    return directory


def doc_commands() -> list[list[str]]:
    lines = [
        line for line in DOC.read_text().splitlines() if line.startswith("$ muto agent journal")
    ]
    return [shlex.split(line.removeprefix("$ muto ")) for line in lines]


def test_the_documented_journal_commands_run(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = doc_commands()
    assert len(commands) >= 6
    for argv in commands:
        argv = [a.replace(DOC_DIR, str(data_dir)) for a in argv]
        argv = [str(tmp_path / a) if a == "journal.jsonl" else a for a in argv]
        assert main(argv) == 0, argv
    out = capsys.readouterr().out
    assert "converged under dsr_1" in out  # replay --at 12:00:30: before the failed update
    assert "ok: 21 events" in out
    exported = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert [json.loads(line)["position"] for line in exported] == list(range(1, 22))


def test_list_filters_and_json(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["agent", "journal", "list", "--data-dir", str(data_dir), "--type", "ReportQueued"]
    assert main([*argv, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["event"]["revision"], r["event"]["status"]) for r in rows] == [
        ("dsr_1", "converged"),
        ("dsr_2", "rolled_back"),
    ]
    assert main([*argv, "--since", "2026-03-01T12:00:30+00:00"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["POS", "AT", "TYPE"] and len(table) == 2


@pytest.mark.parametrize("flag", ["--since", "--until"])
def test_a_time_that_is_no_time_is_one_line_and_exit_2(
    data_dir: Path, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["agent", "journal", "list", "--data-dir", str(data_dir), flag, "yesterday"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        "muto agent journal: 'yesterday' is not an ISO 8601 time, e.g. 2026-01-01T00:00:00Z\n"
    )
    replay = ["agent", "journal", "replay", "--data-dir", str(data_dir), "--at", "noon"]
    assert main(replay) == 2 and "'noon' is not an ISO 8601 time" in capsys.readouterr().err


def test_replay_at_the_latest_point_says_why_the_old_release_runs(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["agent", "journal", "replay", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "rolled_back under dsr_2" in out and "nav@2.0.0  rolled_back APPLY_FAILED" in out
    assert main(["agent", "journal", "show", "999", "--data-dir", str(data_dir)]) == 1


def test_verify_fails_on_an_edited_journal(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    source = sqlite3.connect(data_dir / "journal.db")
    target = sqlite3.connect(copy / "journal.db")
    source.backup(target)
    source.close()
    with target:
        target.execute("UPDATE stored_events SET state = replace(state, 'dsr_1', 'dsr_9')")
    target.close()
    assert main(["agent", "journal", "verify", "--data-dir", str(copy), "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert not found["ok"] and any("chain broken" in p for p in found["problems"])


def test_trust_writes_what_run_provisions_and_run_refuses_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release_key, control = Signer.generate(), Signer.generate()
    (tmp_path / "r.pub").write_text(release_key.public_pem)
    (tmp_path / "c.pub").write_text(control.public_pem)
    out = tmp_path / "trust.json"
    argv = ["agent", "trust", "--release-key", str(tmp_path / "r.pub"),
            "--control-plane-key", str(tmp_path / "c.pub"), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert decode(out.read_bytes(), TrustConfig).release_keys.threshold == 1
    run = ["agent", "run", "--vehicle-id", "v1", "--data-dir", str(tmp_path / "data")]
    assert main(run) == 2
    assert "provision it with --trust" in capsys.readouterr().err


def test_run_resolves_its_paths_once_so_a_stack_finds_its_release_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--data-dir ./x`: the agent's paths are absolute from the command line on, so the
    MUTO_RELEASE_DIR a stack gets still names its release after it changes directory."""
    seen: list[RunOptions] = []

    async def serve(build: object, options: RunOptions, *_: object) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(agent_cli, "_serve", serve)
    monkeypatch.chdir(tmp_path)
    argv = ["agent", "run", "--vehicle-id", "v1", "--data-dir", "./x",
            "--vehicle-state", "state.json", "--trust", "../trust.json"]  # fmt: skip
    assert main(argv) == 0
    (options,) = seen
    assert options.data_dir == tmp_path / "x"
    assert options.vehicle_state == tmp_path / "state.json"
    assert options.trust == tmp_path.parent / "trust.json"

    # What compose.local_agent gives the runtime, and a stack that leaves its directory.
    overlay = make_archive(tmp_path / "overlay.tar.gz", {"VERSION": "1.0.0"})
    found = "import os; os.chdir('/'); open(os.environ['MUTO_RELEASE_DIR'] + '/found', 'w')"
    rel = stack_release("nav", "1.0.0", [artifact_for(overlay, ArtifactType.ARCHIVE)],
                        launch=Launch(command=[PYTHON, "-c", found]))  # fmt: skip
    runtime = build_runtime(options.runtime, options.data_dir / "runtime")

    async def body() -> None:
        try:
            await runtime.apply(rel, cache_of(overlay))
            await until(lambda: list(tmp_path.glob("x/runtime/releases/*/found")), "found")
        finally:
            await runtime.stop()

    monkeypatch.chdir(tmp_path.parent)  # the agent's own directory does not matter either
    asyncio.run(body())
