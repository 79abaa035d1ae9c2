"""Release archives: a tar.gz workspace overlay, extracted safely and atomically into
`<releases>/<stack>@<version>-<digest12>/`."""

from __future__ import annotations

import asyncio
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType, StackRelease


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
    release: StackRelease, artifacts: Mapping[str, Path], releases_dir: Path
) -> Path:
    """The release's extracted directory; extracted once (atomically) and reused after."""
    artifact = single_artifact(release, ArtifactType.ARCHIVE)
    archive = cached_path(release, artifact, artifacts)
    target = releases_dir / f"{release.key}-{digest12(artifact.digest)}"
    if not target.is_dir():
        await asyncio.to_thread(extract_atomically, archive, target)
    return target


def extract_atomically(archive: Path, target: Path) -> None:
    """Extract into a temporary sibling, then rename: `target` exists only complete.
    ReasonError(APPLY_FAILED) for an unreadable or unsafe archive."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                reason = unsafe_reason(member)
                if reason is not None:
                    raise ReasonError(ReasonCode.APPLY_FAILED, f"unsafe archive: {reason}")
            # The stdlib 'data' filter re-checks every path against the real tree.
            tar.extractall(staging, members=members, filter="data")
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # else a concurrent apply finished it first
                raise
    except (tarfile.TarError, OSError, EOFError) as exc:
        detail = f"cannot extract {archive.name}: {exc}"
        raise ReasonError(ReasonCode.APPLY_FAILED, detail) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why a member may not be extracted: an absolute path or a `..` component, a link
    that leaves the tree, or a device node. None when it is safe."""
    name = member.name
    if _absolute_or_dotdot(name):
        return f"{name!r} leaves the release directory"
    if member.issym():
        target = posixpath.join(posixpath.dirname(name), member.linkname)
        if member.linkname.startswith("/") or _leaves_tree(target):
            return f"link {name!r} -> {member.linkname!r} leaves the release directory"
    if member.islnk() and _absolute_or_dotdot(member.linkname):
        return f"hard link {name!r} -> {member.linkname!r} leaves the release directory"
    if member.isdev():
        return f"{name!r} is a device or fifo"
    return None


def _absolute_or_dotdot(name: str) -> bool:
    return name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/")


def _leaves_tree(path: str) -> bool:
    # Relative links may climb inside the overlay (share/x -> ../../lib/x), not out of it.
    normal = posixpath.normpath(path)
    return normal == ".." or normal.startswith("../")
