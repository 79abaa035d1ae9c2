"""build_runtime: one table of adapters, chosen by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from muto.agent.runtime import RUNTIMES, build_runtime
from muto.agent.runtime.podman import PodmanRuntime
from muto.agent.runtime.simulated import SimulatedBehaviour, SimulatedRuntime
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_every_runtime_is_built_by_its_name(tmp_path: Path, name: str) -> None:
    runtime = build_runtime(name, tmp_path)
    assert runtime.name == name
    assert runtime.status().release is None


def test_options_reach_the_adapter(tmp_path: Path) -> None:
    behaviours = {"nav@1.0.0": SimulatedBehaviour(apply_fails=True)}
    simulated = build_runtime("simulated", tmp_path, behaviours=behaviours, time_scale=0.5)
    assert isinstance(simulated, SimulatedRuntime) and simulated.time_scale == 0.5
    podman = build_runtime("podman", tmp_path, podman="/opt/podman/bin/podman")
    assert isinstance(podman, PodmanRuntime) and podman.podman == "/opt/podman/bin/podman"


def test_an_unknown_runtime_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReasonError) as failure:
        build_runtime("docker", tmp_path)
    assert failure.value.code == ReasonCode.APPLY_FAILED
