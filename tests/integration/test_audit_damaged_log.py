"""The audit on a damaged log and at its edges (an outside review's findings): it never
writes over the evidence, an unreadable row is exit status 2 naming where (never a
traceback, never a partial output file), and a story tells only what belongs to it."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from muto.cli import main
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import assign_desired_state, record_reconcile
from muto.cloud.rollouts import start_rollout
from muto.domain.desired import DesiredStateRequest, Target
from muto.domain.model.rollout import Rollout
from muto.domain.requests import RolloutRequest, RolloutThresholds
from tests.support.releases import signed_release
from tests.support.spine import (
    cause,
    reconcile_report,
    register_fleet,
    registration,
    sqlite_settings,
)

LONE, CANARY = "car-1", "car-2"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log where car-1 was given a release by its id, and car-2 is rollout ro-x's only
    member; car-1 then reports converged on ro-x's revision, which it was never given."""
    data_dir = tmp_path_factory.mktemp("audit-edges")
    cp = ControlPlane.open(sqlite_settings(data_dir))
    try:
        register_fleet(cp, [registration(LONE), registration(CANARY, ring="9")])
        release = signed_release(version="1.0.0")
        cp.execute(release.register(cause("corr-release")))
        by_id = DesiredStateRequest(
            target=Target(type="vehicle", vehicle_id=LONE), stack=release.ref
        )
        cp.execute(assign_desired_state(by_id, [LONE], cause("corr-lone"), cp.sign, now=cp.clock))
        request = RolloutRequest(
            selector="ring=9",
            stack=release.ref.name,
            version=release.ref.version,
            rollout_id="ro-x",
            thresholds=RolloutThresholds(converged_pct=95.0),
        )
        cp.execute(start_rollout(request, [CANARY], [], cause("corr-ro-x"), cp.sign, cp.clock))
        rollout: Rollout = cp.log.repository.get(Rollout.create_id("ro-x"))
        foreign = reconcile_report(LONE, "r-foreign", revision=rollout.assigned[CANARY])
        cp.execute(record_reconcile(foreign, f"vehicle:{LONE}"))
    finally:
        cp.close()
    return data_dir


@pytest.fixture
def data_dir(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "cloud"
    shutil.copytree(pristine, copy)
    return copy


@pytest.fixture(autouse=True)
def _no_database_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUTO_DATABASE_URL", raising=False)


def audit(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["audit", *args, "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    return code, out, err


def damage(data_dir: Path, sql: str) -> None:
    with sqlite3.connect(data_dir / "events.db") as db:
        db.execute(sql)


def files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_export_never_writes_over_a_database(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = data_dir / "events.db"
    before = events.read_bytes()
    for target in ("events.db", "views.db", "events.db-wal"):
        code, _, err = audit(capsys, data_dir, "export", "--out", str(data_dir / target))
        assert code == 2, target
        assert "is an SQLite database or one of its files" in err
    assert events.read_bytes() == before
    assert audit(capsys, data_dir, "verify")[0] == 0
    missing = data_dir / "no-such-dir" / "out.jsonl"
    code, _, err = audit(capsys, data_dir, "export", "--out", str(missing))
    assert (code, err.strip()) == (
        2,
        f"muto audit: cannot write {missing}: No such file or directory",
    )


def test_an_undecodable_row_stops_every_verb_with_status_2_and_leaves_no_file(
    data_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    damage(data_dir, "UPDATE muto_events SET state = CAST('{}' AS BLOB) WHERE id = 5")
    said = "the event at position 5 cannot be decoded"
    out = tmp_path / "replayed" / "views.db"
    code, _, err = audit(capsys, data_dir, "replay", "--out", str(out))
    assert code == 2 and said in err
    assert not out.parent.exists() or files(out.parent) == set()  # not even a temporary file
    kept = tmp_path / "events.jsonl"
    kept.write_text("an earlier export\n")
    code, _, err = audit(capsys, data_dir, "export", "--out", str(kept))
    assert code == 2 and said in err
    assert kept.read_text() == "an earlier export\n"  # left as it was
    assert {name for name in files(tmp_path) if name.startswith(".")} == set()  # no temp file


def test_an_unreadable_record_is_named_by_the_position_before_it(
    data_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    damage(data_dir, "UPDATE muto_events SET originator_id = x'00' WHERE id = 4")
    said = "muto audit: the record after position 3 cannot be read (ValueError:"
    for args in (
        ["export"],
        ["explain", "--vehicle", LONE],
        ["replay", "--out", str(tmp_path / "replay.db")],
    ):
        code, _, err = audit(capsys, data_dir, *args)
        assert code == 2 and err.startswith(said), (args, err)
    assert not (tmp_path / "replay.db").exists()


def test_an_assignment_by_vehicle_id_names_the_vehicle(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = audit(
        capsys, data_dir, "explain", "--vehicle", LONE, "--at", "2100-01-01T00:00Z"
    )
    assert code == 0
    assert f"target vehicle {LONE}" in out and "None" not in out


def test_a_rollout_story_leaves_out_reports_by_vehicles_it_did_not_give_the_revision(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = audit(capsys, data_dir, "explain", "--rollout", "ro-x", "--json")
    assert code == 0
    reports = [e for e in json.loads(out) if e["type"] == "Vehicle.ReconcileReported"]
    assert reports == []  # car-1's report names ro-x's revision, but ro-x never gave it
    _, lone, _ = audit(capsys, data_dir, "explain", "--vehicle", LONE, "--json")
    assert "r-foreign" in lone  # still in car-1's own story: the log keeps every report


def test_a_bad_setting_is_one_line_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["audit", "export", "--database-url", "postgres://db/fleet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MUTO_DATABASE_URL): use postgresql+psycopg://" in err
