"""A component environment: one virtual environment holding a release's LUCID
components (python wheels), and the installed registry that says what is in it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from muto.agent.disk import disk_full, disk_full_output
from muto.agent.runtime.commands import run_command
from muto.agent.runtime.dist_names import pep503
from muto.agent.runtime.registry import InstalledComponent, InstalledRegistry
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.trust.files import private_dir

# What the agent's environment may not pass on to pip and venv: anything that says where
# an install goes, from where, or how (every PIP_*: PIP_TARGET, PIP_PREFIX, PIP_INDEX_URL,
# PIP_FIND_LINKS...; every PYTHON* and _PYTHON_*: PYTHONPATH, PYTHONHOME, PYTHONUSERBASE,
# _PYTHON_SYSCONFIGDATA_NAME; an activated venv's VIRTUAL_ENV). The rest stays: PATH, HOME
# and TMPDIR (pip's cache and temporary files), LD_LIBRARY_PATH and the locale (the
# agent's own interpreter may need them to start), and proxies, harmless since pip
# fetches nothing (--no-index).
_REDIRECTING_PREFIXES = ("PIP_", "PYTHON", "_PYTHON_")
_REDIRECTING = frozenset({"VIRTUAL_ENV", "__PYVENV_LAUNCHER__"})


@dataclass(frozen=True, slots=True)
class Wheel:
    """A wheel to install: its file (named as pip requires) and its identity."""

    path: Path  # the cached file, named by digest
    filename: str  # the wheel's own file name, which pip requires
    dist_name: str  # normalised (PEP 503)
    version: str
    digest: str


@dataclass(frozen=True, slots=True)
class ComponentChange:
    dist_name: str
    action: str  # "install" | "uninstall"
    noop: bool


class ComponentEnvironment:
    """`root/venv` plus `root/components.json`.

    Invariants: the registry lists exactly the components whose install completed (it
    is written after pip succeeds); installing a digest already recorded does nothing;
    uninstall removes the dist_name recorded at install, never a name inferred later;
    uninstalling a component that is not installed is a no-op (noop=True).

    The venv is created `--without-pip` and filled by the agent's own pip through
    `pip --python` (about 7x faster than a venv with its own pip, see docs/runtimes.md);
    without pip in the agent it falls back to a venv with pip.

    venv and pip run with `installer_env`: the runtime's `mark` (GroupLedger.environment),
    so that one left running by an agent that died is reaped with the stack, and nothing
    of the agent's environment that could redirect the install.
    """

    def __init__(
        self,
        root: Path,
        *,
        python: str = sys.executable,
        agent_pip: bool | None = None,
        timeout_sec: float = 600.0,
        mark: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.venv = root / "venv"
        self.bin_dir = self.venv / "bin"
        self.registry = InstalledRegistry(root / "components.json")
        self.python = python
        if agent_pip is None:
            agent_pip = importlib.util.find_spec("pip") is not None
        self.agent_pip = agent_pip
        self.timeout_sec = timeout_sec
        self.mark = dict(mark or {})

    def installed(self) -> dict[str, InstalledComponent]:
        return self.registry.load()

    async def create(self) -> None:
        """Create the venv unless a complete one is there (an interrupted one is redone)."""
        if (self.venv / "pyvenv.cfg").is_file() and (self.bin_dir / "python").exists():
            return
        without_pip = ["--without-pip"] if self.agent_pip else []
        argv = [self.python, "-m", "venv", "--clear", *without_pip, str(self.venv)]
        await self._run("venv", argv)

    async def install(self, wheels: Sequence[Wheel]) -> list[ComponentChange]:
        """Install the wheels not already recorded with the same digest, in one pip run."""
        installed = self.registry.load()
        todo = [w for w in wheels if _recorded_digest(installed, w.dist_name) != w.digest]
        if todo:
            private_dir(self.root)
            with tempfile.TemporaryDirectory(dir=self.root) as staging:
                files = [_stage(w, Path(staging)) for w in todo]
                # --force-reinstall: a new digest of the same version must replace the old.
                await self._pip("install", "--no-index", "--no-deps", "--force-reinstall", *files)
            for w in todo:
                installed[w.dist_name] = InstalledComponent(
                    dist_name=w.dist_name, version=w.version, digest=w.digest
                )
            self.registry.save(installed)
        done = {w.dist_name for w in todo}
        return [ComponentChange(w.dist_name, "install", w.dist_name not in done) for w in wheels]

    async def uninstall(self, dist_name: str) -> ComponentChange:
        installed = self.registry.load()
        key = pep503(dist_name)
        recorded = installed.get(key)
        if recorded is None:
            return ComponentChange(key, "uninstall", noop=True)
        await self._pip("uninstall", "--yes", recorded.dist_name)
        del installed[key]
        self.registry.save(installed)
        return ComponentChange(recorded.dist_name, "uninstall", noop=False)

    async def sync(self, wheels: Sequence[Wheel]) -> list[ComponentChange]:
        """Make the environment hold exactly `wheels`."""
        await self.create()
        changes = await self.install(wheels)
        wanted = {w.dist_name for w in wheels}
        for dist_name in sorted(set(self.registry.load()) - wanted):
            changes.append(await self.uninstall(dist_name))
        return changes

    async def _pip(self, *args: str) -> None:
        venv_python = str(self.bin_dir / "python")
        if self.agent_pip:
            prefix = [self.python, "-m", "pip", "--python", venv_python]
        else:
            prefix = [venv_python, "-m", "pip"]
        await self._run(
            f"pip {args[0]}", [*prefix, "--disable-pip-version-check", "--no-input", *args]
        )

    async def _run(self, what: str, argv: list[str]) -> None:
        env = installer_env(os.environ, self.mark)
        try:
            result = await run_command(argv, env=env, timeout_sec=self.timeout_sec)
        except (OSError, TimeoutError) as exc:
            raise ReasonError(_code(full=disk_full(exc)), f"{what}: {exc!r}") from None
        if not result.ok:
            code = _code(full=disk_full_output(result.output))
            raise ReasonError(code, f"{what} failed: {result.output}")


def installer_env(agent_env: Mapping[str, str], mark: Mapping[str, str]) -> dict[str, str]:
    """The environment of venv and pip: the agent's, less what could redirect an install
    (no configuration file, no user site either), plus the runtime's `mark`."""
    kept = {name: value for name, value in agent_env.items() if not _redirects(name)}
    return {**kept, **mark, "PIP_CONFIG_FILE": os.devnull, "PYTHONNOUSERSITE": "1"}


def _redirects(name: str) -> bool:
    upper = name.upper()
    return upper in _REDIRECTING or upper.startswith(_REDIRECTING_PREFIXES)


def _code(*, full: bool) -> ReasonCode:
    return ReasonCode.INSUFFICIENT_DISK if full else ReasonCode.APPLY_FAILED


def _recorded_digest(installed: dict[str, InstalledComponent], dist_name: str) -> str | None:
    recorded = installed.get(dist_name)
    return recorded.digest if recorded else None


def _stage(wheel: Wheel, staging: Path) -> str:
    target = staging / wheel.filename
    try:
        os.link(wheel.path, target)
    except OSError:
        shutil.copyfile(wheel.path, target)
    return str(target)
