"""The python_wheel runtime with real wheels, a real venv and a real pip."""

from __future__ import annotations

import asyncio
import json
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from muto.agent.runtime.base import RuntimeAdapter
from muto.agent.runtime.components import ComponentEnvironment, Wheel
from muto.agent.runtime.python_wheel import PythonWheelRuntime, release_wheels
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import ArtifactType, HealthModel, Launch, StackRelease
from tests.support.releases import stack_release
from tests.support.runtime_contract import Built, RuntimeContract
from tests.support.runtime_kit import (
    PYTHON,
    artifact_for,
    cache_of,
    make_wheel,
    pid_alive,
    sha256,
    write_script,
)
from tests.support.waits import until

# The component proves where it runs: it writes its interpreter prefix, then serves.
COMPONENT = """
import os, sys, time
def main():
    with open("component.json", "w") as f:
        f.write('{"prefix": "%s", "pid": %d}' % (sys.prefix, os.getpid()))
    time.sleep(300)
"""
PROBE = [PYTHON, "-c", "import os, sys; sys.exit(0 if os.path.exists('component.json') else 1)"]
READY = HealthModel(readiness_probe=PROBE, readiness_timeout_sec=30)


def wheel_release(
    tmp_path: Path, version: str = "1.0.0", dist_name: str | None = "lucid-agent-cpu"
) -> tuple[StackRelease, dict[str, Path]]:
    wheels = tmp_path / f"wheels-{version}"
    wheels.mkdir()
    wheel = make_wheel(wheels, version=version, module_body=COMPONENT)
    extra = {"dist_name": dist_name} if dist_name else {}
    artifact = artifact_for(
        wheel, ArtifactType.PYTHON_WHEEL, ref=f"https://artifacts.example/{wheel.name}", **extra
    )
    # The cache names files by digest: the runtime must not rely on the file name.
    cached = tmp_path / f"cache-{sha256(wheel).removeprefix('sha256:')}"
    cached.write_bytes(wheel.read_bytes())
    rel = stack_release(
        "lucid", version, [artifact], launch=Launch(entry_points=["lucid-agent-cpu"])
    )
    return rel, cache_of(cached)


def test_installs_into_a_per_release_venv_and_runs_the_entry_point(tmp_path: Path) -> None:
    rt = PythonWheelRuntime(tmp_path / "runtime", poll_sec=0.05, grace_sec=2)
    rel, cache = wheel_release(tmp_path)

    async def main() -> None:
        try:
            await rt.apply(rel, cache)
            await rt.wait_ready(READY)
            directory = rt.running_directory()
            assert directory is not None and directory.name.startswith("lucid@1.0.0-")
            seen = json.loads((directory / "component.json").read_text())
            assert Path(seen["prefix"]) == directory / "venv"
            components = rt.components()
            assert list(components) == ["lucid-agent-cpu"]
            recorded = components["lucid-agent-cpu"]
            assert (recorded.version, recorded.digest) == ("1.0.0", rel.artifacts[0].digest)
            await rt.apply(rel, cache)  # the running release: nothing happens
            assert json.loads((directory / "component.json").read_text())["pid"] == seen["pid"]
            await rt.stop()
            assert not pid_alive(seen["pid"])
            assert rt.components() == {}
        finally:
            await rt.stop()

    asyncio.run(main())


def test_install_of_a_recorded_digest_does_nothing_and_uninstall_is_strict(
    tmp_path: Path,
) -> None:
    rel, cache = wheel_release(tmp_path)
    (wheel,) = release_wheels(rel, cache)
    env = ComponentEnvironment(tmp_path / "env")

    async def main() -> None:
        first = await env.sync([wheel])
        assert [(c.dist_name, c.action, c.noop) for c in first] == [
            ("lucid-agent-cpu", "install", False)
        ]
        assert (env.bin_dir / "lucid-agent-cpu").is_file()
        # A second install must not even run pip: point pip at nothing and see it succeed.
        env.python = str(tmp_path / "no-python")
        again = await env.install([wheel])
        assert again[0].noop
        env.python = PYTHON

        gone = await env.uninstall("Lucid_Agent.CPU")  # any spelling of the recorded name
        assert (gone.dist_name, gone.noop) == ("lucid-agent-cpu", False)
        assert not (env.bin_dir / "lucid-agent-cpu").exists()
        assert env.installed() == {}
        absent = await env.uninstall("lucid-agent-cpu")
        assert absent.noop

    asyncio.run(main())


def test_a_new_digest_of_the_same_version_is_reinstalled(tmp_path: Path) -> None:
    env = ComponentEnvironment(tmp_path / "env")
    old = make_wheel(tmp_path, module_body="def main():\n    print('old')\n")
    newer_dir = tmp_path / "new"
    newer_dir.mkdir()
    new = make_wheel(newer_dir, module_body="def main():\n    print('new')\n")

    def wheel(path: Path) -> Wheel:
        return Wheel(path, path.name, "lucid-agent-cpu", "1.0.0", sha256(path))

    async def main() -> None:
        await env.sync([wheel(old)])
        changes = await env.sync([wheel(new)])
        assert not changes[0].noop
        site = next((env.venv / "lib").glob("python*/site-packages"))
        assert "new" in (site / "lucid_agent_cpu" / "__init__.py").read_text()
        assert env.installed()["lucid-agent-cpu"].digest == sha256(new)

    asyncio.run(main())


def test_sync_removes_components_the_release_no_longer_has(tmp_path: Path) -> None:
    env = ComponentEnvironment(tmp_path / "env")
    cpu = make_wheel(tmp_path)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    gpu = make_wheel(other_dir, name="lucid_agent_gpu", scripts={"gpu": "lucid_agent_gpu:main"})

    def wheel(path: Path, name: str) -> Wheel:
        return Wheel(path, path.name, name, "1.0.0", sha256(path))

    async def main() -> None:
        await env.sync([wheel(cpu, "lucid-agent-cpu"), wheel(gpu, "lucid-agent-gpu")])
        changes = await env.sync([wheel(cpu, "lucid-agent-cpu")])
        assert [(c.dist_name, c.action, c.noop) for c in changes] == [
            ("lucid-agent-cpu", "install", True),
            ("lucid-agent-gpu", "uninstall", False),
        ]
        assert not (env.bin_dir / "gpu").exists()

    asyncio.run(main())


def test_dist_name_defaults_to_the_wheel_file_name(tmp_path: Path) -> None:
    rel, cache = wheel_release(tmp_path, dist_name=None)
    (wheel,) = release_wheels(rel, cache)
    assert (wheel.dist_name, wheel.version) == ("lucid-agent-cpu", "1.0.0")
    assert wheel.filename == "lucid_agent_cpu-1.0.0-py3-none-any.whl"


def hosted_release(tmp_path: Path, wheel: Path) -> tuple[StackRelease, dict[str, Path]]:
    """As `muto release sign --hosted` names it: the ref, like the cached file, is the
    digest only."""
    digest = sha256(wheel)
    cached = tmp_path / "cache" / digest.removeprefix("sha256:")
    cached.parent.mkdir()
    cached.write_bytes(wheel.read_bytes())
    artifact = artifact_for(cached, ArtifactType.PYTHON_WHEEL, ref=f"artifacts/{digest}")
    launch = Launch(entry_points=["lucid-agent-cpu"])
    rel = stack_release("lucid", "1.0.0", [artifact], launch=launch, health=READY)
    return rel, cache_of(cached)


def test_a_hosted_wheel_is_installed_under_its_own_file_name(tmp_path: Path) -> None:
    rel, cache = hosted_release(tmp_path, make_wheel(tmp_path, module_body=COMPONENT))
    (wheel,) = release_wheels(rel, cache)
    assert wheel.filename == "lucid_agent_cpu-1.0.0-py3-none-any.whl"
    rt = PythonWheelRuntime(tmp_path / "runtime", poll_sec=0.05, grace_sec=2)

    async def main() -> None:
        try:
            await rt.apply(rel, cache)
            await rt.wait_ready(READY)
            directory = rt.running_directory()
            assert directory is not None
            assert json.loads((directory / "component.json").read_text())["prefix"] == str(
                directory / "venv"
            )
            recorded = rt.components()["lucid-agent-cpu"]
            assert (recorded.version, recorded.digest) == ("1.0.0", rel.artifacts[0].digest)
        finally:
            await rt.stop()

    asyncio.run(main())


def test_a_hosted_zip_that_is_no_wheel_is_an_apply_failure(tmp_path: Path) -> None:
    not_a_wheel = tmp_path / "lucid.zip"
    with zipfile.ZipFile(not_a_wheel, "w") as archive:
        archive.writestr("lucid_agent_cpu/__init__.py", "def main():\n    pass\n")
    rel, cache = hosted_release(tmp_path, not_a_wheel)
    rt = PythonWheelRuntime(tmp_path / "runtime")

    async def main() -> None:
        with pytest.raises(ReasonError) as failure:
            await rt.apply(rel, cache)
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert failure.value.detail == (
            f"lucid@1.0.0: 'artifacts/{rel.artifacts[0].digest}' names no wheel file and is"
            " not a wheel: it holds no *.dist-info directories"
        )
        assert rt.status().release is None

    asyncio.run(main())


@pytest.mark.parametrize("problem", ["dist-name-mismatch", "no-entry-point", "bad-entry-point"])
def test_apply_failures(tmp_path: Path, problem: str) -> None:
    rel, cache = wheel_release(
        tmp_path, dist_name="lucid-agent-gpu" if "mismatch" in problem else "lucid-agent-cpu"
    )
    if problem == "no-entry-point":
        rel = stack_release("lucid", "1.0.0", rel.artifacts, launch=Launch())
    if problem == "bad-entry-point":
        rel = stack_release("lucid", "1.0.0", rel.artifacts, launch=Launch(entry_points=["nope"]))
    rt = PythonWheelRuntime(tmp_path / "runtime")

    async def main() -> None:
        try:
            with pytest.raises(ReasonError) as failure:
                await rt.apply(rel, cache)
            assert failure.value.code == ReasonCode.APPLY_FAILED
            assert rt.status().release is None
        finally:
            await rt.stop()

    asyncio.run(main())


def test_a_broken_wheel_is_an_apply_failure(tmp_path: Path) -> None:
    broken = tmp_path / "lucid_agent_cpu-1.0.0-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    artifact = artifact_for(broken, ArtifactType.PYTHON_WHEEL)
    rel = stack_release("nav", "1.0.0", [artifact], launch=Launch(entry_points=["lucid-agent-cpu"]))
    rt = PythonWheelRuntime(tmp_path / "runtime")

    async def main() -> None:
        with pytest.raises(ReasonError) as failure:
            await rt.apply(rel, cache_of(broken))
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert "pip install failed" in failure.value.detail

    asyncio.run(main())


def test_a_venv_with_its_own_pip_works_too(tmp_path: Path) -> None:
    """The fallback for an agent without pip (slower: ensurepip runs per venv)."""
    rel, cache = wheel_release(tmp_path)
    env = ComponentEnvironment(tmp_path / "env", agent_pip=False)

    async def main() -> None:
        await env.sync(release_wheels(rel, cache))
        assert (env.bin_dir / "lucid-agent-cpu").is_file()
        assert (env.bin_dir / "pip").exists()

    asyncio.run(main())


def site_packages(directory: Path) -> Path:
    return next((directory / "venv" / "lib").glob("python*/site-packages"))


def damage_venv(directory: Path, how: str) -> None:
    module = site_packages(directory) / "lucid_agent_cpu" / "__init__.py"
    if how == "edited":  # a bad disk, a hand edit: same size, other bytes
        module.write_text(module.read_text().replace("sleep(300)", "sleep(301)"))
    elif how == "deleted":  # an install cut short
        next(site_packages(directory).glob("lucid_agent_cpu-*.dist-info/METADATA")).unlink()
    elif how == "mode":
        (directory / "venv/bin/lucid-agent-cpu").chmod(0o644)
    elif how == "relinked":
        (directory / "venv/bin/python").unlink()
        (directory / "venv/bin/python").symlink_to("/bin/sh")
    elif how == "no-file-list":  # built by an agent without file lists, or lost
        (directory.parent / (directory.name + ".files")).unlink(missing_ok=True)


def rollback_setup(tmp_path: Path) -> tuple[PythonWheelRuntime, Built, Built]:
    rt = PythonWheelRuntime(tmp_path / "runtime", poll_sec=0.05, grace_sec=2)
    a, cache_a = wheel_release(tmp_path, "1.0.0")
    b, cache_b = wheel_release(tmp_path, "2.0.0")
    return rt, (a, cache_a), (b, cache_b)


@pytest.mark.parametrize("how", ["edited", "deleted", "mode", "relinked", "no-file-list"])
def test_a_kept_venv_that_changed_is_installed_again_before_it_starts(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The rollback to A reuses A's kept venv only while it holds what A's installation put
    there; else it is set aside and installed again from the cached wheel, never started
    damaged."""
    rt, (a, cache_a), (b, cache_b) = rollback_setup(tmp_path)

    async def main() -> None:
        try:
            await rt.apply(a, cache_a)
            await rt.wait_ready(READY)
            dir_a = rt.running_directory()
            assert dir_a is not None
            module = site_packages(dir_a) / "lucid_agent_cpu" / "__init__.py"
            installed = module.read_bytes()
            await rt.apply(b, cache_b)
            damage_venv(dir_a, how)
            await rt.apply(a, cache_a)  # the rollback
            await rt.wait_ready(READY)
            assert rt.running_directory() == dir_a
            assert module.read_bytes() == installed
            assert (dir_a / "venv/bin/lucid-agent-cpu").stat().st_mode & 0o111
            assert json.loads((dir_a / "component.json").read_text())["prefix"] == str(
                dir_a / "venv"
            )
            assert f"{dir_a} differs from its installation" in caplog.text
            assert list(rt.components()) == ["lucid-agent-cpu"]
        finally:
            await rt.stop()

    caplog.set_level(logging.WARNING, "muto.agent.runtime")
    asyncio.run(main())


def test_an_intact_kept_venv_is_reused_without_installing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the release wrote into its directory and venv after the install (its own
    files, __pycache__) is not judged: the rollback runs neither venv nor pip."""
    rt, (a, cache_a), (b, cache_b) = rollback_setup(tmp_path)

    async def main() -> None:
        try:
            await rt.apply(a, cache_a)
            await rt.wait_ready(READY)
            dir_a = rt.running_directory()
            assert dir_a is not None
            module = site_packages(dir_a) / "lucid_agent_cpu" / "__init__.py"
            inode = module.stat().st_ino
            first = json.loads((dir_a / "component.json").read_text())["pid"]
            await rt.apply(b, cache_b)
            cache = site_packages(dir_a) / "lucid_agent_cpu" / "__pycache__"
            cache.mkdir(exist_ok=True)
            (cache / "later.cpython-311.pyc").write_bytes(b"written at run time")
            rt.python = str(tmp_path / "no-python")  # a venv or pip run would fail
            await rt.apply(a, cache_a)
            await until(
                lambda: json.loads((dir_a / "component.json").read_text())["pid"] != first,
                "A running again",
                tolerate=(OSError, ValueError),  # the file half-written
            )
            assert module.stat().st_ino == inode
            assert "differs from its installation" not in caplog.text
        finally:
            await rt.stop()

    caplog.set_level(logging.WARNING, "muto.agent.runtime")
    asyncio.run(main())


def test_a_damaged_venv_that_cannot_be_installed_again_fails_with_a_reason(
    tmp_path: Path,
) -> None:
    rt, (a, cache_a), (b, cache_b) = rollback_setup(tmp_path)

    async def main() -> None:
        try:
            await rt.apply(a, cache_a)
            dir_a = rt.running_directory()
            assert dir_a is not None
            await rt.apply(b, cache_b)
            damage_venv(dir_a, "edited")
            (wheel,) = cache_a.values()
            wheel.write_bytes(b"not a zip")  # the cache would catch this
            with pytest.raises(ReasonError) as failure:
                await rt.apply(a, cache_a)
            assert failure.value.code == ReasonCode.APPLY_FAILED
            detail = failure.value.detail
            assert "differs from its installation (venv/lib/python" in detail
            assert "lucid_agent_cpu/__init__.py is not the file the installation holds" in detail
            assert "pip install failed" in detail
            assert rt.status().release == "lucid@2.0.0" and rt.status().alive  # B untouched
            assert not dir_a.exists()  # nothing damaged is left to start by mistake
        finally:
            await rt.stop()

    asyncio.run(main())


def test_a_reinstall_that_fills_the_disk_is_insufficient_disk(tmp_path: Path) -> None:
    rt, (a, cache_a), (b, cache_b) = rollback_setup(tmp_path)
    full = write_script(
        tmp_path / "python-on-a-full-disk",
        "#!/bin/sh\necho 'OSError: [Errno 28] No space left on device' >&2\nexit 1\n",
    )

    async def main() -> None:
        try:
            await rt.apply(a, cache_a)
            dir_a = rt.running_directory()
            assert dir_a is not None
            await rt.apply(b, cache_b)
            damage_venv(dir_a, "deleted")
            rt.python = str(full)
            with pytest.raises(ReasonError) as failure:
                await rt.apply(a, cache_a)
            assert failure.value.code == ReasonCode.INSUFFICIENT_DISK
            assert "differs from its installation (venv/lib/python" in failure.value.detail
            assert "METADATA is missing or not a file" in failure.value.detail
            assert rt.status().release == "lucid@2.0.0" and rt.status().alive
        finally:
            await rt.stop()

    asyncio.run(main())


class TestPythonWheelRuntimeContract(RuntimeContract):
    @pytest.fixture
    def runtime(self, tmp_path: Path) -> RuntimeAdapter:
        return PythonWheelRuntime(tmp_path / "runtime", poll_sec=0.05, grace_sec=2)

    @pytest.fixture
    def runnable(self, tmp_path: Path) -> Callable[[str], Built]:
        def build(version: str) -> Built:
            rel, cache = wheel_release(tmp_path, version)
            return msgspec.structs.replace(rel, health_model=READY), cache

        return build

    @pytest.fixture
    def unpreparable(self, tmp_path: Path) -> Built:
        broken = tmp_path / "lucid_agent_cpu-9.0.0-py3-none-any.whl"
        broken.write_bytes(b"not a zip")  # pip cannot install it
        artifact = artifact_for(broken, ArtifactType.PYTHON_WHEEL)
        launch = Launch(entry_points=["lucid-agent-cpu"])
        return stack_release("lucid", "9.0.0", [artifact], launch=launch), cache_of(broken)
