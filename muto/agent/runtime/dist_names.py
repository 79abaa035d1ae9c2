"""Python distribution names: PEP 503 normalisation and wheel file names (PEP 427)."""

from __future__ import annotations

import re
import zipfile
from email.parser import HeaderParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode

_SEPARATORS = re.compile(r"[-_.]+")
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
# What each part of a wheel file name may hold once escaped (no `-`: it separates them).
_VERSION = re.compile(r"^[A-Za-z0-9._+!]+$")
_BUILD = re.compile(r"^[0-9][A-Za-z0-9_.]*$")
_TAG = re.compile(r"^[A-Za-z0-9_.]+$")
MAX_HEADER_BYTES = 1 << 20  # of METADATA: its headers come first, the description after


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


def wheel_filename(metadata: str, wheel: str) -> str:
    """The file name of the wheel whose `*.dist-info` holds this METADATA and WHEEL text
    (the binary distribution format): `{name}-{version}(-{build})?-{python tag}-{abi
    tag}-{platform tag}.whl`, the name escaped (runs of `-_.` become `_`, lower case), `-`
    in the version and build `_`, each tag part the values the `Tag:` lines give it, in
    order, joined by `.`. ReasonError(APPLY_FAILED) naming what is missing or malformed."""
    meta = HeaderParser().parsestr(metadata)
    name, version = (str(meta.get(field, "")).strip() for field in ("Name", "Version"))
    if not name or not version:
        raise ReasonError(ReasonCode.APPLY_FAILED, "its METADATA has no Name or no Version")
    normalize_dist_name(name)
    version = version.replace("-", "_")
    if not _VERSION.match(version):
        raise ReasonError(ReasonCode.APPLY_FAILED, f"its METADATA Version {version!r} is malformed")
    info = HeaderParser().parsestr(wheel)
    tags = [str(tag).strip().split("-") for tag in info.get_all("Tag") or []]
    if not tags:
        raise ReasonError(ReasonCode.APPLY_FAILED, "its WHEEL has no Tag")
    if any(len(tag) != 3 or not all(_TAG.match(part) for part in tag) for tag in tags):
        raise ReasonError(ReasonCode.APPLY_FAILED, "its WHEEL has a malformed Tag")
    build = str(info.get("Build", "")).strip().replace("-", "_")
    if build and not _BUILD.match(build):
        raise ReasonError(ReasonCode.APPLY_FAILED, f"its WHEEL Build {build!r} is malformed")
    parts = [_SEPARATORS.sub("_", name).lower(), version, *([build] if build else [])]
    parts += [".".join(dict.fromkeys(tag[i] for tag in tags)) for i in range(3)]
    return "-".join(parts) + ".whl"


def wheel_filename_in(path: Path) -> str:
    """The file name of the wheel at `path`, read from the wheel itself: its one
    `<name>-<version>.dist-info` directory, whose name must agree with METADATA's.
    ReasonError(APPLY_FAILED, "not a wheel: ...") for a file that is no zip, or a zip
    that is no wheel."""
    try:
        info, metadata, wheel = _dist_info(path)
        filename = wheel_filename(metadata, wheel)
        if pep503(info.split("-", 1)[0]) != parse_wheel_filename(filename)[0]:
            raise ReasonError(
                ReasonCode.APPLY_FAILED, f"{info}.dist-info is not of its METADATA Name"
            )
    except ReasonError as exc:
        raise ReasonError(exc.code, f"not a wheel: {exc.detail}") from None
    except (OSError, EOFError, ValueError, NotImplementedError, zipfile.BadZipFile) as exc:
        raise ReasonError(ReasonCode.APPLY_FAILED, f"not a wheel: {exc}") from None
    return filename


def _dist_info(path: Path) -> tuple[str, str, str]:
    """The zip's one `*.dist-info` directory, and the text of its METADATA and WHEEL."""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        top = {n.split("/", 1)[0] for n in names if "/" in n}
        infos = sorted(d for d in top if d.endswith(".dist-info"))
        if len(infos) != 1:
            found = f"{len(infos)} ({', '.join(infos)})" if infos else "no"
            raise ReasonError(ReasonCode.APPLY_FAILED, f"it holds {found} *.dist-info directories")
        (info,) = infos
        texts = []
        for member in (f"{info}/METADATA", f"{info}/WHEEL"):
            if member not in names:
                raise ReasonError(ReasonCode.APPLY_FAILED, f"it has no {member}")
            with archive.open(member) as f:
                texts.append(f.read(MAX_HEADER_BYTES).decode("utf-8", "replace"))
    metadata, wheel = texts
    return info.removesuffix(".dist-info"), metadata, wheel
