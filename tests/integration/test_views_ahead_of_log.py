"""Views ahead of their event log (a log restored from a backup beside newer views, a
copy of the .db files without their -wal files, a log that lost its last events) are
refused at open by every command that opens the store, exit 2 and one line naming both
positions and what to do; the views are rebuilt only on the operator's word
(`muto cloud serve --rebuild-views`). Served, they showed events the log does not hold,
took the next writes at positions they believed applied (never shown; a token issued
then was unknown) and `muto audit verify` reported tampering (review r3, finding 1).

Also the audit's side (finding 3): a data dir without its views says the chain is
missing, and an anchor past a truncated chain says the chain lacks it, not the log."""

from __future__ import annotations

import sqlite3
import subprocess
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from muto.audit.source import AuditError
from muto.audit.verify import verify
from muto.cli import main
from muto.cloud.auditing import EVENTS_TABLE, verify_chain
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import update_vehicle
from muto.cloud.mqtt.outbox import NOTIFIER
from muto.cloud.settings import Settings
from muto.domain.requests import VehiclePatch
from muto.projections import ViewsAhead, ViewsInUse
from muto.projections.chain import HashChain
from muto.projections.locks import Lease, Lock
from muto.projections.store import TRACKING_TABLE
from tests.conftest import free_port
from tests.support.api_server import MUTO, ApiServer
from tests.support.spine import cause, postgres_settings, register_fleet, registration

REMEDY = (
    "if the event log was restored from a backup (or copied without its -wal file), "
    "start once with `muto cloud serve --rebuild-views` to rebuild the views from it; "
    "otherwise the log lost events: `muto audit verify` says from which position (run "
    "it before any rebuild: the audit chain in the views is the evidence)"
)


def refusal(applied: int, head: int) -> str:
    return (
        f"muto cloud: the views are ahead of the event log: they have applied it up to "
        f"position {applied}, but it ends at position {head}: {REMEDY}"
    )


def given_a_fleet(settings: Settings) -> int:
    """v1 and v2 registered; returns the log's last position."""
    cp = ControlPlane.open(settings)
    try:
        register_fleet(cp, [registration("v1"), registration("v2")])
        return cp.log.position()
    finally:
        cp.close()


def label(settings: Settings, vehicle_id: str, **labels: str) -> dict[str, str]:
    """Add labels through the write path; the vehicle's labels as its view shows them."""
    cp = ControlPlane.open(settings)
    try:
        cp.execute(update_vehicle(vehicle_id, VehiclePatch(labels=labels), cause()))
        return dict(cp.queries.vehicle(vehicle_id).labels)
    finally:
        cp.close()


def labels_of(settings: Settings, vehicle_id: str) -> dict[str, str]:
    cp = ControlPlane.open(settings)
    try:
        return dict(cp.queries.vehicle(vehicle_id).labels)
    finally:
        cp.close()


def run(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MUTO, *args, "--data-dir", str(store)], capture_output=True, text=True, timeout=90
    )


def log_head(events_db: Path) -> int:
    with closing(sqlite3.connect(events_db)) as db:
        return int(db.execute(f"SELECT max(id) FROM {EVENTS_TABLE}").fetchone()[0])


def test_a_restored_event_log_is_refused_then_rebuilt_on_the_operators_word(
    tmp_path: Path,
) -> None:
    server = ApiServer(tmp_path / "cloud")
    settings = server.settings
    secret, _ = server.issue("operator")["operator"]
    given_a_fleet(settings)
    events_db = settings.data_dir / "events.db"
    backup = tmp_path / "events.backup.db"
    with closing(sqlite3.connect(events_db)) as live, closing(sqlite3.connect(backup)) as copy:
        live.backup(copy)  # the log is backed up first ...
    backed_up = log_head(backup)
    label(settings, "v1", copied="after-log")  # ... then a write lands, in the views too
    events_db.write_bytes(backup.read_bytes())  # the log restored alone: views newer
    for leftover in ("events.db-wal", "events.db-shm"):
        (settings.data_dir / leftover).unlink(missing_ok=True)

    serve = ["cloud", "serve", "--no-mqtt", "--port", str(free_port())]
    for command in (serve, ["cloud", "token", "create", "--operator"]):
        done = run(settings.data_dir, *command)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [refusal(backed_up + 1, backed_up)]
    assert log_head(events_db) == backed_up  # refused before anything was written

    server.options = ("--rebuild-views",)
    server.start(wait="/readyz")
    try:
        with server.client(secret) as http:
            shown = http.get("/vehicles/v1")
        assert shown.status_code == 200, shown.text
        assert "copied" not in shown.json()["data"]["labels"]  # the log does not hold it
    finally:
        assert server.stop() == 0
    assert "dropped every view, the audit chain and every stored position" in server.tail()

    # The rebuilt views follow the log: the next write shows, the store opens as usual
    # and the chain verifies.
    assert label(settings, "v2", new="write")["new"] == "write"
    assert labels_of(settings, "v1").get("copied") is None
    verified = run(settings.data_dir, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"intact: {backed_up + 1} events chained")


def delete_events_after(settings: Settings, position: int) -> None:
    engine = create_engine(settings.events_url)
    try:
        with engine.begin() as db:
            db.execute(text(f"DELETE FROM {EVENTS_TABLE} WHERE id > :p"), {"p": position})
    finally:
        engine.dispose()


def views_sql(settings: Settings, statement: str, **params: object) -> None:
    engine = create_engine(settings.views_url)
    try:
        with engine.begin() as db:
            db.execute(text(statement), params)
    finally:
        engine.dispose()


def test_a_log_that_lost_its_last_event_is_refused_and_rebuilt_only_when_asked(
    store_settings: Settings,
) -> None:
    given_a_fleet(store_settings)
    label(store_settings, "v1", copied="after-log")
    head = log_position(store_settings)
    delete_events_after(store_settings, head - 1)  # the label's event is lost
    with pytest.raises(ViewsAhead) as refused:
        ControlPlane.open(store_settings)
    assert (refused.value.applied, refused.value.head) == (head, head - 1)
    assert str(refused.value) == (
        f"the views are ahead of the event log: they have applied it up to position "
        f"{head}, but it ends at position {head - 1}"
    )
    with pytest.raises(ViewsAhead):  # nothing changed: refused again
        ControlPlane.open(store_settings)

    rebuilt = replace(store_settings, rebuild_views=True)
    assert labels_of(rebuilt, "v1").get("copied") is None
    assert label(store_settings, "v2", new="write")["new"] == "write"
    assert verify_chain(store_settings).intact


def log_position(settings: Settings) -> int:
    """The log's last position, read through an opened store."""
    cp = ControlPlane.open(settings)
    try:
        return cp.log.position()
    finally:
        cp.close()


@pytest.mark.parametrize("past", ["notifier", "chain"])
def test_every_position_the_views_hold_counts(store_settings: Settings, past: str) -> None:
    """The MQTT notifier's stored position, and the chain's links when the tracked
    positions are gone: either past the log's end is refused."""
    head = given_a_fleet(store_settings)
    if past == "notifier":
        views_sql(
            store_settings,
            f"INSERT INTO {TRACKING_TABLE} (application_name, notification_id) VALUES (:n, :p)",
            n=NOTIFIER,
            p=head + 5,
        )
        expected = (head + 5, head)
    else:
        views_sql(store_settings, f"DELETE FROM {TRACKING_TABLE}")
        delete_events_after(store_settings, head - 1)
        expected = (head, head - 1)
    with pytest.raises(ViewsAhead) as refused:
        ControlPlane.open(store_settings)
    assert (refused.value.applied, refused.value.head) == expected
    ControlPlane.open(replace(store_settings, rebuild_views=True)).close()
    ControlPlane.open(store_settings).close()  # rebuilt: every position within the log


@pytest.mark.postgres
def test_rebuilding_is_refused_while_another_process_holds_a_duty(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = postgres_settings(postgres_url, tmp_path)
    head = given_a_fleet(settings)
    other = create_engine(settings.views_url)  # another process's session
    lease = Lease(other, Lock.PROJECTOR)
    try:
        assert lease.held()
        with pytest.raises(ViewsInUse) as refused:
            ControlPlane.open(replace(settings, rebuild_views=True))
        assert str(refused.value) == (
            "another process uses these views (it holds the projector duty): stop every "
            "process of the deployment, the API replicas too, before the views are rebuilt"
        )
    finally:
        lease.release()
        other.dispose()
    assert log_position(replace(settings, rebuild_views=True)) == head


def test_rebuilding_runs_in_one_process_of_role_all(tmp_path: Path) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/muto"  # refused before it is opened
    done = subprocess.run(
        [*MUTO, "cloud", "serve", "--role", "api", "--rebuild-views", "--database-url", url,
         "--data-dir", str(tmp_path), "--no-mqtt", "--port", str(free_port())],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "muto cloud serve: --rebuild-views runs in one --role all process, not --role api: "
        "stop every process of the deployment, start one with --role all --rebuild-views, "
        "then the deployment again"
    ]


# -- the audit's side ------------------------------------------------------------------


def test_verify_without_the_views_says_the_chain_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path, mqtt_url=None)
    given_a_fleet(settings)
    for name in ("views.db", "views.db-wal", "views.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    said = (
        f"no audit chain beside the event log: {tmp_path / 'views.db'} (the views, which "
        "hold it) is not there; serving this store (`muto cloud serve`) builds the chain "
        "from the log as it stands then, so it attests the log from then on, not before "
        "(to verify a backup, restore its views file with its event log)"
    )
    with pytest.raises(AuditError) as missing:
        verify(settings.events_url, settings.views_url, EVENTS_TABLE)
    assert str(missing.value) == said
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"muto audit: {said}\n"
    assert not (tmp_path / "views.db").exists()  # the audit created nothing


def test_an_anchor_past_a_truncated_chain_says_the_chain_lacks_it(
    store_settings: Settings,
) -> None:
    settings = store_settings
    head = given_a_fleet(settings)
    anchors = {head: verify_chain(settings).head_hash}
    kept = head - 2  # the chain cut back to here: its links and its position
    views_sql(settings, "DELETE FROM view_audit_chain WHERE position > :p", p=kept)
    views_sql(
        settings,
        f"UPDATE {TRACKING_TABLE} SET notification_id = :p WHERE application_name = :n",
        p=kept,
        n=HashChain.name,
    )
    found = verify_chain(settings, anchors)
    assert (found.bad_position, found.reason) == (
        head,
        f"anchored position is in the log but not in the chain, which ends at {kept}: "
        "the chain was truncated",
    )
    delete_events_after(settings, kept)  # now the log lacks it too
    found = verify_chain(settings, anchors)
    assert (found.bad_position, found.reason) == (
        head,
        "anchored position is not in the log: truncated or rewritten",
    )
