"""Python distribution names: PEP 503 normalisation and wheel file names (PEP 427)."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode

_SEPARATORS = re.compile(r"[-_.]+")
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)


def pep503(name: str) -> str:
    """PEP 503: runs of `-`, `_`, `.` become one `-`, lower case."""
    return _SEPARATORS.sub("-", name).lower()


def normalize_dist_name(name: str) -> str:
    """A valid distribution name, normalised (PEP 503).
    ReasonError(APPLY_FAILED) for a string that is no distribution name at all."""
    if not _VALID_NAME.match(name):
        raise ReasonError(ReasonCode.APPLY_FAILED, f"{name!r} is not a distribution name")
    return pep503(name)


def parse_wheel_filename(filename: str) -> tuple[str, str]:
    """`lucid_agent_cpu-1.0.0-py3-none-any.whl` -> (`lucid-agent-cpu`, `1.0.0`)."""
    parts = filename.removesuffix(".whl").split("-") if filename.endswith(".whl") else []
    if len(parts) not in (5, 6):
        raise ReasonError(ReasonCode.APPLY_FAILED, f"{filename!r} is not a wheel file name")
    return normalize_dist_name(parts[0]), parts[1]


def wheel_filename_from_ref(ref: str) -> str | None:
    """The last path segment of an artifact ref (a URL or a path), if it names a wheel."""
    name = unquote(urlsplit(ref).path.rsplit("/", 1)[-1])
    return name if name.endswith(".whl") else None
