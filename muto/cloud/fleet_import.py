"""`muto cloud import-vehicles`: onboard a fleet from a file, many registrations per
atomic append instead of a command (and a commit) per vehicle.

The file is JSON Lines, one registration per line in the API's shape (`POST /vehicles`'s
body, validated by the same Struct). Each chunk of `batch` lines is one command
(`commands.register_vehicles`): stored whole or not at all, with exactly the events that
registering its vehicles one by one stores, and a vehicle already registered identically
is left as it is (re-running an import is harmless)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, register_vehicles
from muto.domain.requests import VehicleRegistration
from muto.domain.wire import WireError, decode

BATCH = 1000  # registrations per atomic append: a few tenths of a second of the writer


@dataclass(frozen=True)
class Imported:
    registered: int  # new vehicles stored
    unchanged: int  # already registered identically
    position: int | None  # the log position of the last chunk


class BadLine(ValueError):
    def __init__(self, line: int, error: WireError) -> None:
        where = f" ({error.path})" if error.path else ""
        super().__init__(f"line {line}{where}: {error}")


def read_registrations(path: Path) -> Iterator[VehicleRegistration]:
    """The file's registrations in order; BadLine names the first one that is not."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    yield decode(line, VehicleRegistration)
                except WireError as exc:
                    raise BadLine(number, exc) from None


def import_vehicles(
    cp: ControlPlane,
    registrations: Iterable[VehicleRegistration],
    cause: Cause,
    batch: int = BATCH,
) -> Imported:
    """Register every vehicle, `batch` per atomic append, each chunk in the views when
    the next is written (read-your-writes, as the API's writes)."""
    registered = unchanged = 0
    position: int | None = None
    found = iter(registrations)
    while chunk := tuple(islice(found, batch)):
        command = register_vehicles(chunk, cause, cp.settings.broker_users)
        written = cp.execute(command, views_timeout=60)
        created = sum(1 for new, _ in written.value if new)
        registered, unchanged = registered + created, unchanged + len(chunk) - created
        position = written.position if written.position is not None else position
    return Imported(registered, unchanged, position)
