"""`muto cloud token create --vehicle` holds to the API's rules (#14 item 9): a malformed
id is refused like POST /tokens' 422, an unregistered one like its 404, nothing stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from muto.cli import main
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.settings import Settings
from tests.support.spine import register_fleet, registration


def position(data_dir: Path) -> int:
    cp = ControlPlane.open(Settings(data_dir=data_dir, mqtt_url=None))
    try:
        return cp.log.position()
    finally:
        cp.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    cp = ControlPlane.open(Settings(data_dir=tmp_path, mqtt_url=None))
    try:
        register_fleet(cp, [registration("v1")])
    finally:
        cp.close()
    return tmp_path


@pytest.mark.parametrize(
    ("vehicle", "says"),
    [
        ("nl-car\n", "$.vehicleId"),
        ("no spaces", "$.vehicleId"),
        ("a/b", "$.vehicleId"),
        ("", "$.vehicleId"),
        ("v2", "not registered"),
    ],
)
def test_a_malformed_or_unregistered_vehicle_gets_no_token(
    data_dir: Path, vehicle: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = position(data_dir)
    code = main(["cloud", "token", "create", "--vehicle", vehicle, "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    assert code != 0
    assert out == ""  # no secret printed
    assert says in err
    assert position(data_dir) == before


def test_a_registered_vehicle_gets_its_token(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cloud", "token", "create", "--vehicle", "v1", "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out.startswith("muto_")
