"""Builders shared by the runtime tests: archives, wheels, releases, stand-in binaries."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from muto.domain.release import (
    Artifact,
    ArtifactType,
)

PYTHON = sys.executable
# For a stack that writes its pid, then `ready`, into its working directory. The probe
# also asks that pid to be alive: rolling back to a release reuses its directory, where
# the `ready` of the run before is still lying.
LIVE_READY = [
    PYTHON,
    "-c",
    "import os, sys; os.kill(int(open('pid').read()), 0); sys.exit(not os.path.exists('ready'))",
]


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def artifact_for(path: Path, kind: ArtifactType, ref: str | None = None, **extra: str) -> Artifact:
    return Artifact(
        type=kind,
        ref=ref or path.name,
        digest=sha256(path),
        size=path.stat().st_size,
        **extra,
    )


def cache_of(*paths: Path) -> dict[str, Path]:
    """What the artifact cache hands a runtime: digest -> file."""
    return {sha256(p): p for p in paths}


def make_archive(path: Path, files: dict[str, str], *, executable: Sequence[str] = ()) -> Path:
    """A tar.gz overlay; `files` maps member name -> text."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name in executable else 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def make_tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    """A tar.gz holding one crafted member (for the unsafe-archive tests)."""
    with tarfile.open(path, "w:gz") as tar:
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def make_wheel(
    directory: Path,
    *,
    name: str = "lucid_agent_cpu",
    version: str = "1.0.0",
    scripts: dict[str, str] | None = None,
    module_body: str = "def main():\n    pass\n",
) -> Path:
    """A minimal valid wheel: one module, dist-info (METADATA, WHEEL, RECORD,
    entry_points.txt). `scripts` maps console script -> `module:function`."""
    scripts = scripts if scripts is not None else {"lucid-agent-cpu": f"{name}:main"}
    info = f"{name}-{version}.dist-info"
    entry_points = "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items())
    files = {
        f"{name}/__init__.py": module_body.encode(),
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n"
        ).encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: muto-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{info}/entry_points.txt": entry_points.encode(),
    }
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        record = []
        for member, data in files.items():
            wheel.writestr(member, data)
            record.append(f"{member},{_record_hash(data)},{len(data)}")
        record.append(f"{info}/RECORD,,")
        wheel.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (an orphan nobody reaps here is dead all the same)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"
