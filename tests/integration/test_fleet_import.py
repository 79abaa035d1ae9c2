"""`muto cloud import-vehicles` and `commands.register_vehicles`: many registrations in
one atomic append store exactly the events of registering one by one, the views equal a
rebuild, a refused registration refuses its chunk whole, and a chunk that races another
process's registration is decided again on fresh loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from muto.cli import main
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import register_vehicle, register_vehicles
from muto.cloud.errors import Conflict
from muto.cloud.fleet_import import import_vehicles
from muto.cloud.settings import Settings
from tests.support.spine import (
    cause,
    postgres_settings,
    registration,
    sqlite_settings,
    view_rows,
)

FLEET = [registration(f"v{i:02d}", region=f"r{i % 3}") for i in range(23)]
# What differs between two stores of the same registrations: when, and the thread of intent.
INCIDENTAL = {"timestamp", "correlation_id"}


def stored(cp: ControlPlane) -> list[tuple[Any, ...]]:
    """Every stored event: its aggregate, version, type and fields, in log order."""
    found = []
    for notification in cp.log.select(0, 100_000):
        event = cp.log.decode(notification)
        fields = {k: v for k, v in vars(event).items() if k not in INCIDENTAL}
        fields = msgspec.to_builtins(fields, builtin_types=(bytes,), str_keys=True)
        key = (notification.originator_id, notification.originator_version)
        found.append((*key, notification.topic, fields))
    return found


def rebuilt(cp: ControlPlane) -> None:
    cp.projector.catch_up()
    incremental = view_rows(cp.views)
    for name in cp.projector.projections:
        cp.projector.rebuild(name)
    assert view_rows(cp.views) == incremental


def one_by_one(settings: Settings) -> list[tuple[Any, ...]]:
    cp = ControlPlane.open(settings)
    try:
        by = cause()
        for body in FLEET:
            cp.execute(register_vehicle(body, by))
        return stored(cp)
    finally:
        cp.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_an_import_stores_the_events_of_registering_one_by_one(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    def settings(name: str) -> Settings:
        if backend == "sqlite":
            return sqlite_settings(tmp_path / name)
        return postgres_settings(request.getfixturevalue("postgres_url"), tmp_path / name)

    expected = one_by_one(sqlite_settings(tmp_path / "single"))
    cp = ControlPlane.open(settings("import"))
    try:
        cp.execute(register_vehicle(FLEET[5], cause()))  # registered before: unchanged
        found = import_vehicles(cp, FLEET, cause(), batch=7)
        assert (found.registered, found.unchanged) == (len(FLEET) - 1, 1)
        assert found.position == cp.log.position()
        assert sorted(stored(cp)) == sorted(expected)
        # read-your-writes: the views show the last chunk when the import returns
        assert cp.queries.vehicle(FLEET[-1].vehicle_id).vehicle_id == FLEET[-1].vehicle_id
        rebuilt(cp)
        again = import_vehicles(cp, FLEET, cause(), batch=7)  # harmless to re-run
        assert (again.registered, again.unchanged) == (0, len(FLEET))
        assert sorted(stored(cp)) == sorted(expected)
    finally:
        cp.close()


def test_a_refused_registration_refuses_its_chunk_whole(tmp_path: Path) -> None:
    cp = ControlPlane.open(sqlite_settings(tmp_path))
    try:
        cp.execute(register_vehicle(registration("v10", model="m9"), cause()))
        before = cp.log.position()
        with pytest.raises(Conflict, match="v10"):
            import_vehicles(cp, FLEET, cause(), batch=7)  # chunk 2 holds v10, other labels
        stored_ids = {e[3].get("vehicle_id") for e in stored(cp)}
        assert stored_ids == {"v10", *(b.vehicle_id for b in FLEET[:7])}  # chunk 1 only
        assert cp.log.position() == before + 7
        rebuilt(cp)
    finally:
        cp.close()


def test_a_chunk_racing_another_process_is_decided_again(tmp_path: Path) -> None:
    """Another process registers a vehicle of the chunk after the chunk learnt it was
    new: the save collides, the command runs again on fresh loads and finds it."""
    first, second = ControlPlane.open(sqlite_settings(tmp_path)), None
    try:
        second = ControlPlane.open(sqlite_settings(tmp_path))
        other = second

        def racing(uow: Any) -> Any:
            value = command(uow)
            if not raced:
                raced.append(other.execute(register_vehicle(FLEET[3], cause())))
            return value

        raced: list[Any] = []
        command = register_vehicles(FLEET[:5], cause())
        written = first.execute(racing)
        assert raced, "the other process registered first"
        assert [new for new, _ in written.value] == [True, True, True, False, True]
        first.projector.catch_up()
        assert len({e[0] for e in stored(first)}) == 5
        rebuilt(first)
    finally:
        first.close()
        if second is not None:
            second.close()


def test_the_cli_imports_a_file_and_names_a_bad_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    good = tmp_path / "fleet.jsonl"
    good.write_bytes(b"\n".join(msgspec.json.encode(r) for r in FLEET[:4]) + b"\n\n")
    args = ["cloud", "import-vehicles", "--data-dir", str(data), "--batch", "3"]
    assert main([*args, str(good)]) == 0
    assert capsys.readouterr().out == "registered: 4\nunchanged: 0\n"
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(msgspec.json.encode(FLEET[5]) + b'\n{"vehicleId": "a b"}\n')
    assert main([*args, str(bad)]) == 2
    assert "line 2 ($.vehicleId)" in capsys.readouterr().err
    cp = ControlPlane.open(sqlite_settings(data))
    try:
        assert cp.queries.vehicles(None, 100, None).total == 4  # the bad file stored nothing
    finally:
        cp.close()
