"""Release archives: a tar.gz workspace overlay, extracted safely and atomically into
`<releases>/<stack>@<version>-<digest12>/`, with the list of what it holds (each file's
sha256, mode and size; each link's target) beside it in `<that name>.files`. A directory
applied again (a rollback, a restore) is checked against that list first, and extracted
again from the cached archive when it differs (the list and its check: file_list.py)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path

from muto.agent.disk import disk_full
from muto.agent.runtime.archive_rules import (
    ArchiveLimits,
    ArchiveTree,
    Entry,
    Parts,
    UnsafeArchive,
    entry_of,
)
from muto.agent.runtime.file_list import (
    FileList,
    Listed,
    damage,
    file_list_path,
    set_aside,
    write_file_list,
)
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType, StackRelease

DIR_MODE = 0o755
CHUNK = 1 << 20
MAX_READ = 4 << 20  # no tar header is this long; file data is read in CHUNKs
HEADER_BYTES = 16 << 10  # headers (pax, long names) allowed per member

logger = logging.getLogger("muto.agent.runtime")


def single_artifact(release: StackRelease, kind: ArtifactType) -> Artifact:
    """The release's one artifact of `kind`; ReasonError(APPLY_FAILED) for none or several."""
    matching = [a for a in release.artifacts if a.type == kind]
    if len(matching) != 1:
        raise ReasonError(
            ReasonCode.APPLY_FAILED,
            f"{release.key}: expected one {kind} artifact, found {len(matching)}",
        )
    return matching[0]


def cached_path(release: StackRelease, artifact: Artifact, artifacts: Mapping[str, Path]) -> Path:
    path = artifacts.get(artifact.digest)
    if path is None or not path.is_file():
        raise ReasonError(
            ReasonCode.APPLY_FAILED, f"{release.key}: {artifact.digest} is not in the cache"
        )
    return path


def digest12(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


async def extract_release(
    release: StackRelease,
    artifacts: Mapping[str, Path],
    releases_dir: Path,
    limits: ArchiveLimits | None = None,
) -> Path:
    """The release's extracted directory: extracted once (atomically) and reused after,
    as long as it still holds what its archive put there (`damage`). One that does not
    (a file changed or deleted: a bad disk, a hand edit) is logged, set aside and
    extracted again from the cached archive (verified against its digest by the cache);
    ReasonError (APPLY_FAILED, INSUFFICIENT_DISK) naming the damage if that fails."""
    artifact = single_artifact(release, ArtifactType.ARCHIVE)
    archive = cached_path(release, artifact, artifacts)
    target = releases_dir / f"{release.key}-{digest12(artifact.digest)}"
    limits = limits or ArchiveLimits()
    if not target.is_dir():
        await asyncio.to_thread(extract_atomically, archive, target, limits, artifact.digest)
        return target
    problem = await asyncio.to_thread(damage, target, artifact.digest)
    if problem is None:
        return target
    logger.warning(
        "%s: %s differs from its archive (%s): extracting it again", release.key, target, problem
    )
    try:
        await asyncio.to_thread(set_aside, target)
        await asyncio.to_thread(extract_atomically, archive, target, limits, artifact.digest)
    except ReasonError as exc:
        detail = f"{release.key}: {target.name} differs from its archive ({problem}): {exc.detail}"
        raise ReasonError(exc.code, detail) from None
    return target


def extract_atomically(
    archive: Path, target: Path, limits: ArchiveLimits | None = None, archive_digest: str = ""
) -> None:
    """Extract into a temporary sibling, write its FileList (naming `archive_digest`),
    then rename: `target` exists only complete, and only with its list.
    ReasonError(APPLY_FAILED) for an unreadable or unsafe archive (archive_rules.py),
    INSUFFICIENT_DISK when the disk fills up; nothing is left behind either way."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    listing = file_list_path(target)
    try:
        listed = _extract(archive, staging, limits or ArchiveLimits(), archive_digest)
        staging.chmod(DIR_MODE)
        write_file_list(target, listed)
        try:
            os.rename(staging, target)
        except OSError:
            listing.unlink(missing_ok=True)
            raise
    except UnsafeArchive as exc:
        raise ReasonError(
            ReasonCode.APPLY_FAILED, f"unsafe archive {archive.name}: {exc}"
        ) from None
    except OSError as exc:
        if disk_full(exc):
            detail = f"extracting {archive.name}: {exc}"
            raise ReasonError(ReasonCode.INSUFFICIENT_DISK, detail) from None
        raise ReasonError(
            ReasonCode.APPLY_FAILED, f"cannot extract {archive.name}: {exc}"
        ) from None
    except (tarfile.TarError, EOFError, zlib.error, RecursionError) as exc:
        detail = f"cannot extract {archive.name}: {type(exc).__name__}: {exc}"
        raise ReasonError(ReasonCode.APPLY_FAILED, detail) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract(archive: Path, staging: Path, limits: ArchiveLimits, archive_digest: str) -> FileList:
    """Files and directories in archive order, below real directories only (no link
    exists yet, and every open refuses to follow one); symbolic links last, once the
    whole tree has shown that each of them stays inside. Returns what it wrote."""
    tree = ArchiveTree(limits)
    written: dict[Parts, Listed] = {}
    with gzip.open(archive, "rb") as raw:
        stream = BoundedStream(raw, limits)
        with tarfile.open(fileobj=stream, mode="r:") as tar:  # type: ignore[call-overload]
            while (member := tar.next()) is not None:
                entry = entry_of(member)
                tree.add(entry)
                listed = _write(tar, member, entry, staging)
                if listed is not None:
                    written[entry.parts] = listed
    tree.check_links()
    for link in tree.links():
        path = staging.joinpath(*link.parts)
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)  # never a link: add()
        os.symlink(link.link, path)
    entries = [(e, "/".join(parts)) for parts, e in tree.entries.items() if parts]
    return FileList(
        source=archive_digest,
        dirs=[name for e, name in entries if e.kind == "dir"],
        files={
            name: written[e.parts if e.kind == "file" else tuple(e.link.split("/"))]
            for e, name in entries
            if e.kind in ("file", "hardlink")
        },
        links={name: e.link for e, name in entries if e.kind == "symlink"},
    )


def _write(
    tar: tarfile.TarFile, member: tarfile.TarInfo, entry: Entry, staging: Path
) -> Listed | None:
    path = staging.joinpath(*entry.parts)
    if entry.kind == "dir":
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        path.chmod(DIR_MODE)
    elif entry.kind == "hardlink":
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.link(staging.joinpath(*entry.link.split("/")), path, follow_symlinks=False)
    elif entry.kind == "file":
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        return _write_file(tar, member, path)
    return None


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> Listed:
    # Executable bits are kept; setuid/setgid/sticky and group/other write are not.
    mode = (member.mode & 0o755) | 0o600
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    source = tar.extractfile(member)
    if source is None:
        raise UnsafeArchive(f"{member.name!r} has no data")
    fd = os.open(path, flags, mode)
    digest = hashlib.sha256()
    with os.fdopen(fd, "wb") as out, source:
        written = 0
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > member.size:  # tarfile stops at the size; never trust that alone
                raise UnsafeArchive(f"{member.name!r} is longer than its header says")
            out.write(chunk)
            digest.update(chunk)
        os.fchmod(out.fileno(), mode)
    return Listed(mode=mode, size=written, sha256=digest.hexdigest())


class BoundedStream:
    """The decompressed tar stream, read no further than the limits allow: the members'
    bytes plus HEADER_BYTES of headers per member, in reads of at most MAX_READ (a
    forged pax or long-name header is otherwise read whole into memory)."""

    def __init__(self, raw: gzip.GzipFile, limits: ArchiveLimits) -> None:
        self._raw = raw
        self.cap = limits.max_total_bytes + (limits.max_members + 1) * HEADER_BYTES

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_READ:
            raise UnsafeArchive(f"a header or read of {size} bytes (over {MAX_READ})")
        self._check(self._raw.tell() + size)
        return self._raw.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._check(offset)
        elif whence == os.SEEK_CUR:
            self._check(self._raw.tell() + offset)
        else:
            raise UnsafeArchive("seeking from the end of a compressed stream")
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def _check(self, position: int) -> None:
        if position > self.cap:
            raise UnsafeArchive(f"the tar stream runs past {self.cap} bytes")
