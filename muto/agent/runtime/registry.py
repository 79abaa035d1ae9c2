"""The installed registry: which components a component environment holds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import msgspec

from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.trust.files import private_dir

SCHEMA = "muto.components.v1"


class InstalledComponent(msgspec.Struct, frozen=True, kw_only=True):
    # Recorded at install and used verbatim at uninstall: never inferred later.
    dist_name: str
    version: str
    digest: str


class _Document(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    schema: str = SCHEMA
    components: dict[str, InstalledComponent] = {}


class InstalledRegistry:
    """A JSON file keyed by normalised dist_name, replaced atomically (temp file, fsync,
    rename), so a crash leaves either the old or the new registry, never half of one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, InstalledComponent]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            return dict(msgspec.json.decode(data, type=_Document).components)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise ReasonError(ReasonCode.APPLY_FAILED, f"{self.path}: {exc}") from None

    def save(self, components: dict[str, InstalledComponent]) -> None:
        data = msgspec.json.encode(_Document(components=dict(sorted(components.items()))))
        private_dir(self.path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
