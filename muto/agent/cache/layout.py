"""Where the artifact cache keeps its bytes, and what the filesystem says is there.

    root/sha256/<hex>          complete, verified blobs (content-addressed)
    root/partial/<hex>.part    interrupted downloads, kept to resume with Range
    root/pins.json             the pinned digests, written atomically

Everything except the pins is derived from the files themselves: presence and size
from the directory, last use from the blob's mtime (set on each use). No index can
then disagree with the bytes after a crash, and losing a last-use update is harmless.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from muto.domain.wire import DIGEST_PATTERN
from muto.trust.files import atomic_write, private_dir

_DIGEST = re.compile(DIGEST_PATTERN)
_HEX = re.compile(r"[0-9a-f]{64}")  # fullmatch: a blob's file name
_PART = ".part"


def hex_of(digest: str) -> str:
    """The hex of a `sha256:<hex>` digest; anything else (a path, say) is refused."""
    if _DIGEST.search(digest) is None:
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest.removeprefix("sha256:")


def digest_of(hex_: str) -> str:
    return f"sha256:{hex_}"


@dataclass(frozen=True)
class StoredFile:
    """One file in the cache: a complete blob or a partial download."""

    hex: str
    path: Path
    size: int
    mtime_ns: int
    complete: bool


class Pins(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pinned: list[str]


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "sha256"
        self.partials = root / "partial"
        self.pins_file = root / "pins.json"
        private_dir(self.blobs)
        private_dir(self.partials)

    def blob(self, hex_: str) -> Path:
        return self.blobs / hex_

    def partial(self, hex_: str) -> Path:
        return self.partials / f"{hex_}{_PART}"

    def scan(self) -> list[StoredFile]:
        return [
            *self._scan(self.blobs, "", complete=True),
            *self._scan(self.partials, _PART, complete=False),
        ]

    def delete(self, hex_: str) -> bool:
        """Remove the blob and the partial of `hex_`; True if anything was there."""
        removed = False
        for path in (self.blob(hex_), self.partial(hex_)):
            try:
                path.unlink()
                removed = True
            except FileNotFoundError:
                pass
        return removed

    def load_pins(self) -> frozenset[str]:
        # A missing or unreadable file means no pins: the agent re-pins on start.
        try:
            pins = msgspec.json.decode(self.pins_file.read_bytes(), type=Pins)
            return frozenset(hex_of(d) for d in pins.pinned)
        except (OSError, msgspec.DecodeError, ValueError):
            return frozenset()

    def save_pins(self, hexes: Iterable[str]) -> None:
        pins = Pins(pinned=sorted(digest_of(h) for h in hexes))
        atomic_write(self.pins_file, msgspec.json.encode(pins))

    def _scan(self, folder: Path, suffix: str, *, complete: bool) -> Iterator[StoredFile]:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name.removesuffix(suffix) if suffix else entry.name
                if (suffix and not entry.name.endswith(suffix)) or not _HEX.fullmatch(name):
                    continue  # a temp file or a stranger: not ours to count or evict
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue  # renamed or evicted while we looked
                yield StoredFile(name, Path(entry.path), stat.st_size, stat.st_mtime_ns, complete)


class UseClock:
    """Last-use stamps (ns) that never go backwards, even when the vehicle's clock does
    (no RTC, a late NTP sync): least-recent use stays meaningful."""

    def __init__(self, last_ns: int = 0) -> None:
        self._last = last_ns

    def touch(self, path: Path) -> None:
        self._last = max(time.time_ns(), self._last + 1)
        os.utime(path, ns=(self._last, self._last))


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(partial: Path, blob: Path) -> None:
    """Move a verified partial into place: fsync its bytes, rename, fsync the directory."""
    with partial.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, blob)
    fsync_dir(blob.parent)
