"""No vehicle may be registered under the cloud's MQTT broker user (docs/mqtt.md): a
vehicle logs in to the broker under its id, so a vehicle `muto-cloud` would overwrite
the cloud's broker password (`add-users.sh` adds or updates) or get its read-write access
to every vehicle's topics. The shipped ACL's user is refused by every process, API
replicas without an MQTT URL included; the user in the cloud's own URL too. Through the
API and `muto cloud import-vehicles`, each a 422 (or exit 2) naming the id and why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from starlette.testclient import TestClient

from muto.cli import main
from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.settings import MEMORY, Settings
from muto.cloud.tokens import Role, issue_token
from muto.domain.broker import CLOUD_USER
from tests.support.spine import registration, sqlite_settings

URL_USER = "cloud-a"  # the user in this cloud's MQTT URL, not the shipped ACL's
REASON = "is reserved: it is the control plane's MQTT broker user"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    url = f"mqtt://{URL_USER}:secret@127.0.0.1:1"  # never connected: no bridge in process
    plane = ControlPlane.open(Settings(database_url=MEMORY, data_dir=tmp_path, mqtt_url=url))
    secret, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
    plane.execute(command)
    try:
        with TestClient(create_app(plane.settings, plane=plane)) as found:
            found.headers["Authorization"] = f"Bearer {secret}"
            yield found
    finally:
        plane.close()


@pytest.mark.parametrize("vehicle_id", [CLOUD_USER, URL_USER])
def test_the_api_refuses_the_broker_user_as_a_vehicle_id(
    client: TestClient, vehicle_id: str
) -> None:
    refused = client.post("/vehicles", json={"vehicleId": vehicle_id, "labels": {"model": "m3"}})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["details"]) == ("invalid", {"path": "$.vehicleId"})
    assert f"vehicle id {vehicle_id!r} {REASON}" in error["message"]
    assert client.get(f"/vehicles/{vehicle_id}").status_code == 404
    assert client.post("/vehicles", json={"vehicleId": "muto-cloud-2"}).status_code == 201


def test_the_shipped_acl_names_the_reserved_user() -> None:
    acl = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "acl"
    users = [line.split()[1] for line in acl.read_text().splitlines() if line.startswith("user ")]
    assert users == [CLOUD_USER]


def test_an_import_naming_the_broker_user_is_refused_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MUTO_MQTT_URL", f"mqtt://{URL_USER}:secret@broker.example:1883")
    data, fleet = tmp_path / "data", tmp_path / "fleet.jsonl"
    for vehicle_id in (CLOUD_USER, URL_USER):
        lines = (registration("v1"), registration(vehicle_id), registration("v2"))
        fleet.write_bytes(b"\n".join(msgspec.json.encode(r) for r in lines) + b"\n")
        assert main(["cloud", "import-vehicles", "--data-dir", str(data), str(fleet)]) == 2
        assert f"refused: vehicle id {vehicle_id!r} {REASON}" in capsys.readouterr().err
    cp = ControlPlane.open(sqlite_settings(data))
    try:
        assert cp.queries.vehicles(None, 100, None).total == 0  # its chunk, refused whole
    finally:
        cp.close()
