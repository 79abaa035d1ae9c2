"""The installed registry: atomic JSON keyed by dist_name."""

from __future__ import annotations

from pathlib import Path

import pytest

from muto.agent.runtime.registry import InstalledComponent, InstalledRegistry
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode

CPU = InstalledComponent(dist_name="lucid-agent-cpu", version="1.0.0", digest="sha256:" + "a" * 64)


def test_round_trips_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    registry = InstalledRegistry(tmp_path / "components.json")
    assert registry.load() == {}
    registry.save({CPU.dist_name: CPU})
    registry.save({CPU.dist_name: CPU})
    assert registry.load() == {"lucid-agent-cpu": CPU}
    assert [p.name for p in tmp_path.iterdir()] == ["components.json"]
    assert b'"schema":"muto.components.v1"' in (tmp_path / "components.json").read_bytes()


def test_an_unreadable_registry_is_an_apply_failure(tmp_path: Path) -> None:
    (tmp_path / "components.json").write_text('{"schema": "muto.components.v1", "extra": 1}')
    with pytest.raises(ReasonError) as failure:
        InstalledRegistry(tmp_path / "components.json").load()
    assert failure.value.code == ReasonCode.APPLY_FAILED
