"""An event log stored by the code of 2026-12-03 (tests/fixtures/event_log_v1, written by
tests/fixtures/make_event_log_v1.py) is read by today's code: every event decodes, the
views rebuilt from it equal the views that code built, and the audit verbs print what
they printed then. Old stores keep working without a migration (docs/event-store.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from muto.cli import main
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, register_release
from muto.cloud.commands.releases import Registration
from muto.cloud.eventlog import EventLog
from muto.cloud.settings import Settings
from muto.projections.base import event_type
from muto.trust.dsse import cosign
from muto.trust.keys import Signer
from tests.support.spine import sqlite_settings, view_rows

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "event_log_v1"


@pytest.fixture(autouse=True)
def _no_database_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUTO_DATABASE_URL", raising=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    data_dir = tmp_path / "cloud"
    data_dir.mkdir(mode=0o700)
    shutil.copy(FIXTURE / "events.db", data_dir / "events.db")
    return sqlite_settings(data_dir)


def plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def test_every_stored_event_decodes(settings: Settings) -> None:
    log = EventLog.open(settings)
    try:
        records = log.select(0, 10_000)
        events = [log.decode(r) for r in records]
    finally:
        log.close()
    assert len(events) == 172
    assert {event_type(e) for e in events} >= {
        "Vehicle.Registered",
        "Vehicle.Updated",
        "Vehicle.DesiredStateAssigned",
        "Vehicle.ReconcileReported",
        "Vehicle.HealthChanged",
        "Vehicle.PresenceChanged",
        "Release.Registered",
        "DesiredState.Created",
        "AccessToken.Issued",
        "AccessToken.Revoked",
        "Rollout.Started",
        "Rollout.PhaseAssigned",
        "Rollout.CanaryGatePassed",
        "Rollout.CanaryGateFailed",
        "Rollout.WaveGatePassed",
        "Rollout.WaveGateFailed",
        "Rollout.BakeCompleted",
        "Rollout.Paused",
        "Rollout.Resumed",
        "Rollout.MembersLeft",
        "Rollout.RolledBack",
    }


# Where today's views differ from the old code's on purpose: (table, row key, column) ->
# value. The inventory shows what a vehicle's newest report says runs, null included
# (docs/api.md); the old code kept the release from before a report of nothing running.
# A member given a rollback is `rolling_back` until it reports converged on it
# (docs/rollouts.md): none of these three did, the old code said `rolled_back`.
INTENDED: dict[tuple[str, tuple[tuple[str, str], ...], str], Any] = {
    ("view_vehicles", (("vehicle_id", "car-3"),), "running_release"): None,
    **{
        ("view_rollout_vehicles", (("rollout_id", ro), ("vehicle_id", car)), "status"): (
            "rolling_back"
        )
        for ro, car in (("ro-b", "car-3"), ("ro-c", "car-4"), ("ro-d", "car-5"))
    },
}
# Columns added to a view since the fixture was stored: an old store rebuilds that view
# (ViewStore.reshape), and the rest of each row must equal the old code's.
ADDED = {
    "view_rollout_vehicles": (
        "report_ledger",
        "rollback_codes",
        "assigned_revision",
        "superseded_by",
    ),
    "view_releases": ("signatures_added",),
    "view_vehicles": ("health_reason_codes",),
}
# Optional fields added to a stored event since the fixture, with the value an old event
# reads with (its default): shown in the event's data (the audit view, export, explain),
# and everything else must equal the old code's.
ADDED_FIELDS = {"desired_at_start": None}  # Rollout.Started


def without_added_fields(value: Any) -> Any:
    """`value` (JSON) without the ADDED_FIELDS that hold their default, at any depth."""
    if isinstance(value, dict):
        return {
            k: without_added_fields(v)
            for k, v in value.items()
            if not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])
        }
    if isinstance(value, list):
        return [without_added_fields(v) for v in value]
    return value


def test_views_rebuilt_from_the_old_log_equal_the_old_views(settings: Settings) -> None:
    expected = json.loads((FIXTURE / "views.json").read_text())
    for (table, key, column), value in INTENDED.items():
        (row,) = [r for r in expected[table] if all(r[k] == v for k, v in key)]
        assert row[column] != value, "the old view already agrees: drop this entry"
        row[column] = value
    cp = ControlPlane.open(settings)
    try:
        cp.projector.catch_up()
        built = without_added_fields(plain(view_rows(cp.views)))
    finally:
        cp.close()
    assert built.pop("view_key_rotations") == []  # a view since the fixture: no rotations then
    for table, columns in ADDED.items():
        assert all(set(columns) <= row.keys() for row in built[table]), table
        built[table] = [{k: v for k, v in row.items() if k not in columns} for row in built[table]]
    for table, rows in expected.items():
        assert built[table] == rows, table
    assert built.keys() == expected.keys()


@pytest.mark.parametrize(
    ("printed", "args"),
    [
        ("export.jsonl", ["export"]),
        ("explain-car-1.json", ["explain", "--vehicle", "car-1", "--json"]),
        ("explain-ro-a.json", ["explain", "--rollout", "ro-a", "--json"]),
        ("explain-ro-d.json", ["explain", "--rollout", "ro-d", "--json"]),
    ],
)
def test_audit_verbs_read_the_old_log(
    settings: Settings, capsys: pytest.CaptureFixture[str], printed: str, args: list[str]
) -> None:
    """Equal as JSON: a number typed float reads back as 180.0 where a dict kept 180."""
    assert main(["audit", *args, "--data-dir", str(settings.data_dir)]) == 0
    out, expected = capsys.readouterr().out, (FIXTURE / printed).read_text()
    if printed.endswith(".jsonl"):
        assert [without_added_fields(json.loads(line)) for line in out.splitlines()] == [
            json.loads(line) for line in expected.splitlines()
        ]
    else:
        assert without_added_fields(json.loads(out)) == json.loads(expected)


def test_audit_verify_and_replay_read_the_old_log(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ControlPlane.open(settings).close()  # the chain is built by the projector
    assert main(["audit", "verify", "--data-dir", str(settings.data_dir)]) == 0
    assert "intact: 172 events chained" in capsys.readouterr().out
    out = tmp_path / "replay.db"
    assert main(["audit", "replay", "--data-dir", str(settings.data_dir), "--out", str(out)]) == 0
    assert "replayed 172 events" in capsys.readouterr().out


def test_a_release_of_the_old_store_takes_another_signature(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Signatures added to a release registered by the old code: stored beside its one
    `Release.Registered`, shown by the views (rebuilt with the new column), and the
    chain over the whole log still verifies."""
    cp = ControlPlane.open(settings)
    try:
        cp.projector.catch_up()
        old = cp.queries.release("nav", "2.0.0")
        assert cp.queries.release_envelope("nav@2.0.0")[1] == 0
        second = Signer.generate()
        envelope = cosign(old.envelope, second)
        command = register_release(old.manifest, old.manifest_digest, envelope, Cause.of("test"))
        assert cp.execute(command).value == Registration(created=False, added=(second.keyid,))
        cp.projector.catch_up()
        assert cp.queries.release("nav", "2.0.0").envelope == envelope
        assert cp.queries.release_envelope("nav@2.0.0")[1] == 1
    finally:
        cp.close()
    assert main(["audit", "verify", "--data-dir", str(settings.data_dir)]) == 0
    assert "intact: 173 events chained" in capsys.readouterr().out
    out = settings.data_dir / "replay.db"
    assert main(["audit", "replay", "--data-dir", str(settings.data_dir), "--out", str(out)]) == 0
    assert "replayed 173 events" in capsys.readouterr().out
    assert main(["audit", "export", "--data-dir", str(settings.data_dir)]) == 0
    (signed,) = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if '"Release.Signed"' in line
    ]
    assert [s["keyid"] for s in signed["data"]["signatures"]] == [second.keyid]
