"""Fixtures of the fault scenarios: a whole loopback fleet of real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Mosquitto
from tests.faults.fleet import Fleet
from tests.support.artifact_server import ArtifactServer
from tests.support.processes import CloudProcess


@pytest.fixture
def fleet(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Fleet]:
    cloud = CloudProcess(tmp_path, mosquitto.url)
    with ArtifactServer() as artifacts:
        cloud.start()
        try:
            yield Fleet(tmp_path, mosquitto, cloud, artifacts)
        finally:
            cloud.stop()
