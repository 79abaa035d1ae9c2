"""Issue 7 on a scripted history: an operator baseline, a canary rollout (paused and
resumed), a crash-looping wave vehicle that fails the wave gate, the controller's
rollback, an operator rollback of the canaries. From the stored events alone, `explain`
tells each vehicle's and the rollout's story, `--at` answers "what was it told to run
then, who decided, what did it report", `replay` rebuilds the views as they stood at the
midpoint, and `export` streams every event."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from muto.audit.source import records, to_entry
from muto.cli import main
from muto.cloud.auditing import open_event_log
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import assign_desired_state, record_health, record_reconcile
from muto.cloud.controller import RolloutController
from muto.cloud.rollouts import pause, resume, roll_back, start_rollout
from muto.domain.model.rollout import Rollout
from muto.domain.reasons import ReasonCode
from muto.domain.reports import HealthStatus, ReconcileStatus
from muto.domain.requests import RolloutRequest, RolloutThresholds
from muto.domain.rollout_rules import Candidate, pick_canaries
from muto.projections import Views
from muto.projections.store import ViewStore
from tests.support.releases import SignedRelease, signed_release
from tests.support.services import fresh_database
from tests.support.spine import (
    cause,
    desired_request,
    health_report,
    postgres_settings,
    reconcile_report,
    register_fleet,
    registration,
    sqlite_settings,
    view_rows,
)

FLEET = ["v-eu-m3-1", "v-eu-m3-2", "v-us-m3-1", "v-us-m3-2"]
CRASHING = "v-eu-m3-2"  # a wave vehicle
CANARY = "v-eu-m3-1"
OPERATOR = "operator:test"


@dataclass
class History:
    cp: ControlPlane
    data_dir: Path
    midpoint: int  # the last position of the baseline, before the rollout
    midpoint_views: dict[str, list[dict[str, Any]]]
    revisions: dict[str, str]  # baseline, canary, wave, rollback, operator-rollback


def _rollout(cp: ControlPlane) -> Rollout:
    found: Rollout = cp.log.repository.get(Rollout.create_id("ro-1"))
    return found


def _script(cp: ControlPlane) -> History:
    register_fleet(cp, [registration(v, region=v.split("-")[1], ring="1") for v in FLEET])
    good, new = signed_release(version="1.0.0"), signed_release(version="2.0.0")
    for release in (good, new):
        cp.execute(release.register(cause("corr-releases")))
    baseline = cp.execute(
        assign_desired_state(
            desired_request("ring=1", good), FLEET, cause("corr-baseline"), cp.sign, now=cp.clock
        )
    ).value.revision

    report_ids = itertools.count(1)

    def report(
        vehicle: str,
        revision: str,
        status: ReconcileStatus,
        running: SignedRelease,
        *codes: ReasonCode,
    ) -> None:
        found = reconcile_report(
            vehicle,
            f"r-{next(report_ids)}",
            status,
            revision=revision,
            reason_codes=codes,
            running=running.ref,
        )
        cp.execute(record_reconcile(found, f"vehicle:{vehicle}"))

    for vehicle in FLEET:
        report(vehicle, baseline, ReconcileStatus.CONVERGED, good)
    midpoint = cp.log.position()
    midpoint_views = view_rows(cp.views)

    canaries, wave = pick_canaries(Candidate(v, v.split("-")[1], v.split("-")[2]) for v in FLEET)
    request = RolloutRequest(
        selector="ring=1",
        stack="core",
        version="2.0.0",
        rollout_id="ro-1",
        thresholds=RolloutThresholds(converged_pct=95.0),
    )
    cp.execute(start_rollout(request, canaries, wave, cause("corr-start"), cp.sign, cp.clock))
    cp.execute(pause("ro-1", cause("corr-pause"), cp.clock))
    cp.execute(resume("ro-1", cause("corr-resume"), cp.clock))
    controller = RolloutController(cp)
    canary = _rollout(cp).assigned[CANARY]
    for vehicle in canaries:
        report(vehicle, canary, ReconcileStatus.CONVERGED, new)
    assert controller.tick() == 1  # canary gate passed, wave assigned
    wave_revision = _rollout(cp).assigned[CRASHING]
    report(
        CRASHING,
        wave_revision,
        ReconcileStatus.ROLLED_BACK,
        good,
        ReasonCode.CRASH_LOOP_DETECTED,
        ReasonCode.ROLLBACK_APPLIED,
    )
    cp.execute(
        record_health(
            health_report(CRASHING, "h-1", HealthStatus.DEGRADED, [ReasonCode.CRASH_LOOP_DETECTED]),
            f"vehicle:{CRASHING}",
        )
    )
    assert controller.tick() == 1  # wave gate failed on the tripwire: rolled back
    rollback = cp.views.desired  # the latest desired state now holds the rollback
    with cp.views.store.reading() as s:
        latest = {r.vehicle_id: r.revision for r in s.execute(rollback.latest.select())}
    report(CRASHING, latest[CRASHING], ReconcileStatus.CONVERGED, good)
    # The wave's failure rolled back every vehicle the rollout changed, canaries too
    # (issue 13 item 1): an operator's rollback afterwards has nothing left to do.
    done = cp.execute(roll_back("ro-1", cause("corr-operator-rollback"), cp.sign, cp.clock))
    assert done.value == 0
    with cp.views.store.reading() as s:
        final = {r.vehicle_id: r.revision for r in s.execute(rollback.latest.select())}
    controller.close()
    return History(
        cp,
        cp.settings.data_dir,
        midpoint,
        midpoint_views,
        {
            "baseline": baseline,
            "canary": canary,
            "wave": wave_revision,
            "rollback": latest[CRASHING],
            "operator-rollback": final[CANARY],
        },
    )


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def history(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[History]:
    data_dir = tmp_path_factory.mktemp("audit")
    with ExitStack() as stack:
        if request.param == "sqlite":
            settings = sqlite_settings(data_dir)
        else:
            settings = postgres_settings(stack.enter_context(fresh_database()), data_dir)
        cp = ControlPlane.open(settings)
        try:
            yield _script(cp)
        finally:
            cp.close()


@pytest.fixture(autouse=True)
def _no_database_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUTO_DATABASE_URL", raising=False)


def audit(capsys: pytest.CaptureFixture[str], history: History, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    where = ["--data-dir", str(history.data_dir)]
    if history.cp.settings.database_url:
        where += ["--database-url", history.cp.settings.database_url]
    code = main(["audit", *args, *where])
    return code, capsys.readouterr().out


def instant_of(history: History, position: int) -> str:
    log = open_event_log(history.cp.settings.events_url)
    try:
        record = next(records(log, after=position - 1, until=position))
        return to_entry(log, record).at.isoformat()
    finally:
        log.close()


# -- explain --------------------------------------------------------------------------


def test_a_vehicle_story_tells_assignments_reports_health_and_rollout_decisions(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = audit(capsys, history, "explain", "--vehicle", CRASHING, "--json")
    assert code == 0
    story = [(e["type"], e["actor"]) for e in json.loads(out)]
    vehicle = f"vehicle:{CRASHING}"
    assert story == [
        ("Vehicle.Registered", OPERATOR),
        ("Vehicle.DesiredStateAssigned", OPERATOR),
        ("Vehicle.ReconcileReported", vehicle),
        ("Rollout.Started", OPERATOR),
        ("Rollout.Paused", OPERATOR),
        ("Rollout.Resumed", OPERATOR),
        ("Rollout.CanaryGatePassed", "controller"),
        ("Rollout.PhaseAssigned", "controller"),
        ("Vehicle.DesiredStateAssigned", "controller"),
        ("Vehicle.ReconcileReported", vehicle),
        ("Vehicle.HealthChanged", vehicle),
        ("Rollout.WaveGateFailed", "controller"),
        ("Rollout.RolledBack", "controller"),
        ("Vehicle.DesiredStateAssigned", "controller"),
        ("Vehicle.ReconcileReported", vehicle),
    ]
    entries = json.loads(out)
    assigned = [
        e["data"]["assignment"] for e in entries if e["type"] == "Vehicle.DesiredStateAssigned"
    ]
    assert [(a["revision"], a["releaseKey"], a["rolloutId"], a["phase"]) for a in assigned] == [
        (history.revisions["baseline"], "core@1.0.0", None, None),
        (history.revisions["wave"], "core@2.0.0", "ro-1", "wave"),
        (history.revisions["rollback"], "core@1.0.0", "ro-1", "rollback"),
    ]
    assert entries[1]["correlationId"] == "corr-baseline"
    assert all(e["correlationId"] for e in entries)


def test_the_vehicle_table_reads_as_a_story(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = audit(capsys, history, "explain", "--vehicle", CRASHING)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["POS", "AT", "EVENT", "ACTOR", "CORRELATION", "WHAT"]
    assert len(lines) == 1 + 15
    text = "\n".join(lines)
    wave, rollback = history.revisions["wave"], history.revisions["rollback"]
    for expected in (
        f"told to run core@2.0.0 (revision {wave}, sequence 2, rollout ro-1 wave)",
        f"reported rolled_back for {wave}, running core@1.0.0 "
        "[CRASH_LOOP_DETECTED, ROLLBACK_APPLIED]",
        "health unknown -> degraded [CRASH_LOOP_DETECTED]",
        "canary gate passed CANARY_GATE_PASSED: 2/2 converged (100.0% of 2 counted vs 95.0%), "
        "0 deferred, 0 failed",
        "wave gate failed WAVE_GATE_FAILED: 0/2 converged (0.0% of 2 counted vs 95.0%), "
        "0 deferred, 1 failed [CRASH_LOOP_DETECTED]",
        f"rollback issued to {', '.join(FLEET)} (revision {rollback}): WAVE_GATE_FAILED",
        "rollout ro-1 paused",
    ):
        assert expected in text


def test_the_rollout_story_shows_start_gates_pauses_and_rollbacks(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = audit(capsys, history, "explain", "--rollout", "ro-1", "--json")
    assert code == 0
    story = [e["type"] for e in json.loads(out)]
    assert story == [
        "Rollout.Started",
        "Rollout.PhaseAssigned",
        "DesiredState.Created",
        "Rollout.Paused",
        "Rollout.Resumed",
        "Vehicle.ReconcileReported",
        "Vehicle.ReconcileReported",
        "Rollout.CanaryGatePassed",
        "Rollout.PhaseAssigned",
        "DesiredState.Created",
        "Vehicle.ReconcileReported",
        "Rollout.WaveGateFailed",
        "Rollout.RolledBack",
        "DesiredState.Created",
        "Vehicle.ReconcileReported",
    ]
    gates = [e for e in json.loads(out) if "Gate" in e["type"]]
    assert [
        {k: g["data"]["evaluation"][k] for k in ("targeted", "converged", "failed", "thresholdPct")}
        for g in gates
    ] == [
        {"targeted": 2, "converged": 2, "failed": 0, "thresholdPct": 95.0},
        {"targeted": 2, "converged": 0, "failed": 1, "thresholdPct": 95.0},
    ]
    assert [g["data"]["reason_code"] for g in gates] == ["CANARY_GATE_PASSED", "WAVE_GATE_FAILED"]
    rolled_back = [e for e in json.loads(out) if e["type"] == "Rollout.RolledBack"]
    assert [(e["actor"], e["data"]["cause"], e["data"]["vehicle_ids"]) for e in rolled_back] == [
        ("controller", "WAVE_GATE_FAILED", FLEET)
    ]

    code, table = audit(capsys, history, "explain", "--rollout", "ro-1")
    story_lines, _, standing = table.partition("\n\n")
    assert code == 0 and len(story_lines.splitlines()) == 1 + len(story)
    lines = [line.split(None, 1) for line in standing.splitlines()]
    assert lines[:2] == [["state", "rolled_back"], ["deadline", "none (final)"]]
    # The members given the rollback that have not reported converged on it: the
    # rollout waits for them (the one that did is rolled back, not listed).
    waiting = lines[3:]
    assert lines[2] == ["outstanding", f"{len(waiting)} vehicle(s)"]
    assert sorted(w[0] for w in waiting) == sorted(set(FLEET) - {CRASHING})
    assert all(w[1].startswith("rolling_back,") for w in waiting)
    assert "rollout ro-1 started: core@2.0.0 on 'ring=1', canaries v-eu-m3-1, v-us-m3-1" in table


def test_at_an_instant_it_tells_what_was_assigned_who_decided_and_what_came_back(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    at_midpoint = instant_of(history, history.midpoint)
    code, out = audit(
        capsys, history, "explain", "--vehicle", CRASHING, "--at", at_midpoint, "--json"
    )
    assert code == 0
    told = json.loads(out)
    assert told["assignment"]["data"]["assignment"]["revision"] == history.revisions["baseline"]
    assert told["assignment"]["actor"] == OPERATOR
    assert [(b["type"], b["correlationId"]) for b in told["because"]] == [
        ("DesiredState.Created", "corr-baseline")
    ]
    assert told["reported"]["data"]["report"]["status"] == "converged"
    assert told["health"] is None and told["expired"] is False

    # During the wave: told 2.0.0 because the canary gate passed.
    wave_assigned = next(
        e
        for e in json.loads(audit(capsys, history, "explain", "--vehicle", CRASHING, "--json")[1])
        if e["type"] == "Vehicle.DesiredStateAssigned" and e["actor"] == "controller"
    )
    code, out = audit(
        capsys, history, "explain", "--vehicle", CRASHING, "--at", wave_assigned["at"], "--json"
    )
    told = json.loads(out)
    assert told["assignment"]["data"]["assignment"]["releaseKey"] == "core@2.0.0"
    assert [b["type"] for b in told["because"]] == [
        "Rollout.CanaryGatePassed",
        "Rollout.PhaseAssigned",
    ]
    assert (
        told["reported"]["data"]["report"]["desiredStateRevision"] == history.revisions["baseline"]
    )

    # At the end: the controller's rollback, after the failed wave gate.
    code, out = audit(
        capsys, history, "explain", "--vehicle", CRASHING, "--at", "2999-01-01T00:00Z"
    )
    assert code == 0
    assert f"core@1.0.0 (revision {history.revisions['rollback']}, rollout ro-1 rollback)" in out
    assert "Rollout.WaveGateFailed by controller: wave gate failed WAVE_GATE_FAILED" in out
    assert "EXPIRED by then" in out  # a thousand years later the document has expired
    assert f"reported converged for {history.revisions['rollback']}" in out

    # A canary rolled back with the wave: the failed wave gate is the reason.
    code, out = audit(
        capsys, history, "explain", "--vehicle", CANARY, "--at", "2999-01-01T00:00Z", "--json"
    )
    told = json.loads(out)
    assert [(b["type"], b["data"].get("reason_code") or b["data"]["cause"])
            for b in told["because"]] == [
        ("Rollout.WaveGateFailed", "WAVE_GATE_FAILED"),
        ("Rollout.RolledBack", "WAVE_GATE_FAILED"),
    ]  # fmt: skip

    code, out = audit(
        capsys, history, "explain", "--vehicle", CRASHING, "--at", "2000-01-01T00:00Z"
    )
    assert code == 0 and "nothing: no desired state assigned by then" in out


def test_explain_refuses_what_it_cannot_answer(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    assert audit(capsys, history, "explain", "--vehicle", "nobody")[0] == 2
    assert audit(capsys, history, "explain", "--rollout", "ro-1", "--at", "2026-01-01")[0] == 2
    capsys.readouterr()
    assert main(["audit", "explain", "--vehicle", CANARY, "--at", "noon"]) == 2
    assert "muto audit: 'noon' is not an ISO 8601 time" in capsys.readouterr().err
    # Without an offset a time names no instant: refused, as GET /audit refuses it.
    assert main(["audit", "explain", "--vehicle", CANARY, "--at", "2026-01-01T12:00"]) == 2
    assert "'2026-01-01T12:00' has no UTC offset" in capsys.readouterr().err
    nowhere = history.data_dir / "nowhere"
    assert main(["audit", "export", "--data-dir", str(nowhere)]) == 2
    assert f"muto audit: no event log at {nowhere / 'events.db'}" in capsys.readouterr().err
    assert not nowhere.exists()  # the audit created nothing


# -- replay ---------------------------------------------------------------------------


def replayed_views(out: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    store = ViewStore(f"sqlite:///{out}")
    try:
        views = Views(store)
        positions = {p.name: store.position_of(p.name) for p in views.all}
        return view_rows(views), positions
    finally:
        store.close()


@pytest.mark.parametrize("how", ["position", "until"])
def test_a_replay_of_the_midpoint_equals_the_views_captured_live_then(
    history: History, capsys: pytest.CaptureFixture[str], tmp_path: Path, how: str
) -> None:
    live_before = view_rows(history.cp.views)
    events_before = history.cp.log.position()
    point = str(history.midpoint) if how == "position" else instant_of(history, history.midpoint)
    out = tmp_path / "midpoint.db"
    code, printed = audit(capsys, history, "replay", f"--{how}", point, "--out", str(out))
    assert code == 0
    assert f"views as of position {history.midpoint}" in printed
    views, positions = replayed_views(out)
    assert views == history.midpoint_views
    assert set(positions.values()) == {history.midpoint}
    # The live views and the log are as they were.
    assert view_rows(history.cp.views) == live_before != views
    assert history.cp.log.position() == events_before
    # An existing output is never overwritten.
    assert audit(capsys, history, "replay", "--position", "1", "--out", str(out))[0] == 2


def test_a_full_replay_equals_the_live_views(
    history: History, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "now.db"
    assert audit(capsys, history, "replay", "--out", str(out))[0] == 0
    assert replayed_views(out)[0] == view_rows(history.cp.views)


# -- export ---------------------------------------------------------------------------


def test_export_streams_every_event_with_actor_and_correlation(
    history: History, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out = audit(capsys, history, "export", "--format", "jsonl")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["position"] for e in lines] == list(range(1, history.cp.log.position() + 1))
    assert {k for e in lines for k in e} == {
        "position",
        "at",
        "type",
        "aggregate",
        "version",
        "actor",
        "correlationId",
        "data",
    }
    # "Every stored event records its actor and correlation id" -- on this history.
    assert all(e["actor"] and e["correlationId"] for e in lines)

    start, end = lines[4]["at"], lines[9]["at"]
    target = tmp_path / "slice.jsonl"
    args = ["export", "--from", start, "--until", end, "--out", str(target)]
    assert audit(capsys, history, *args)[0] == 0
    window = [json.loads(line) for line in target.read_text().splitlines()]
    assert window == [e for e in lines if start <= e["at"] <= end]
    assert [e["position"] for e in window] == list(range(5, 11))
