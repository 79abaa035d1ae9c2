"""What a release directory held when it was made, and whether it still does.

A runtime that keeps a release's directory to run it again (a rollback, a restore) writes,
beside it in `<directory>.files`, the FileList of what it put there: each file's sha256,
mode and size, each directory, each symbolic link's target. Before it reuses the
directory it asks `damage()`; a damaged one is `set_aside()` and made again from the
cached artifacts. Files the release writes there later (caches, logs, `__pycache__`) are
not in the list and are not judged.

Users: archive.py (the list is taken while extracting), python_wheel.py (taken with
`list_tree` once the venv is installed, before it is ever run).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import stat
from pathlib import Path

import msgspec

from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.trust.files import atomic_write

FILE_LIST_SUFFIX = ".files"


class Listed(msgspec.Struct, frozen=True, array_like=True):
    """One regular file as made (an archive's hard link is listed as the file it names)."""

    mode: int
    size: int
    sha256: str


class FileList(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What making a release directory from `source` (the digest of its archive, or of
    its wheels) put there. Directories come parents first; what the release writes
    there later is not listed nor judged. `source` is stored as "archive": lists written
    before the venvs had lists too still read."""

    source: str = msgspec.field(name="archive")
    dirs: list[str]
    files: dict[str, Listed]
    links: dict[str, str]


def file_list_path(target: Path) -> Path:
    """Where the FileList of the release directory `target` is kept: beside it, out of
    the release's sight."""
    return target.with_name(target.name + FILE_LIST_SUFFIX)


def write_file_list(target: Path, listed: FileList) -> None:
    """Atomically (temp file, fsync, rename): a list is there whole or not at all."""
    atomic_write(file_list_path(target), msgspec.json.encode(listed))


def list_tree(target: Path, source: str) -> FileList:
    """The FileList of what `target` holds now, walked without following a link. For a
    directory made in place (a venv, whose scripts name its own path and so cannot be
    renamed): taken once it is complete and before anything runs from it. Sockets,
    fifos and devices are not listed (nothing that makes a release directory makes one)."""
    dirs: list[str] = []
    files: dict[str, Listed] = {}
    links: dict[str, str] = {}
    pending = [""]
    while pending:
        prefix = pending.pop()
        with os.scandir(_at(target, prefix) if prefix else target) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                name = f"{prefix}/{entry.name}" if prefix else entry.name
                found = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(found.st_mode):
                    links[name] = os.readlink(entry.path)
                elif stat.S_ISDIR(found.st_mode):
                    dirs.append(name)
                    pending.append(name)
                elif stat.S_ISREG(found.st_mode):
                    digest = _sha256(Path(entry.path))
                    if digest is None:
                        raise OSError(errno.EIO, f"cannot read {name} to list it")
                    files[name] = Listed(stat.S_IMODE(found.st_mode), found.st_size, digest)
    return FileList(source=source, dirs=dirs, files=files, links=links)


def damage(target: Path, source: str, *, made_by: str = "archive") -> str | None:
    """What in `target` differs from what making it from `source` put there (its
    FileList), or None; `made_by` names the maker in the answer ("archive",
    "installation"). Costs a stat per entry and a sha256 of every file."""
    try:
        listed = msgspec.json.decode(file_list_path(target).read_bytes(), type=FileList)
    except FileNotFoundError:
        return "it has no file list"
    except (OSError, msgspec.DecodeError) as exc:
        return f"its file list cannot be read: {exc}"
    if listed.source != source:
        return f"its file list is of another {made_by}, {listed.source}"
    for name in listed.dirs:  # parents first: nothing below is read through a link
        if not stat.S_ISDIR(_lstat(target, name).st_mode):
            return f"{name}/ is missing or not a directory"
    for name, want in listed.files.items():
        found = _lstat(target, name)
        if not stat.S_ISREG(found.st_mode):
            return f"{name} is missing or not a file"
        if stat.S_IMODE(found.st_mode) != want.mode:
            return f"{name} has mode {stat.S_IMODE(found.st_mode):o}, not {want.mode:o}"
        if found.st_size != want.size or _sha256(_at(target, name)) != want.sha256:
            return f"{name} is not the file the {made_by} holds"
    for name, link in listed.links.items():
        if not stat.S_ISLNK(_lstat(target, name).st_mode):
            return f"{name} is missing or not a link"
        if os.readlink(_at(target, name)) != link:
            return f"{name} no longer links to {link}"
    return None


def _at(target: Path, name: str) -> Path:
    return target.joinpath(*name.split("/"))


MISSING = os.stat_result((0,) * 10)  # no kind: neither a directory, nor a file, nor a link


def _lstat(target: Path, name: str) -> os.stat_result:
    try:
        return os.lstat(_at(target, name))
    except OSError:
        return MISSING  # missing, or a parent no longer a directory


def _sha256(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def set_aside(target: Path) -> None:
    """Move a damaged release directory out of the way (then remove it); its name is
    free for the directory to be made again. ReasonError(APPLY_FAILED) when it cannot
    be moved."""
    aside = target.with_name(f".{target.name}.damaged-{secrets.token_hex(4)}")
    try:
        os.rename(target, aside)
    except OSError as exc:
        raise ReasonError(ReasonCode.APPLY_FAILED, f"cannot set it aside: {exc}") from None
    shutil.rmtree(aside, ignore_errors=True)  # else the runtime's pruning removes it later
