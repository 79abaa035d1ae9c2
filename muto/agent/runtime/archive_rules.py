"""What a release archive may contain: pure rules over its members, decided on plain data.

The extractor (archive.py) calls `ArchiveTree.add` for every member in archive order and
`ArchiveTree.check_links` once at the end, before it creates a single link. The rules do
not depend on the filesystem or on the Python patch level (tarfile's own `data` filter
relied on `os.path.realpath`, which CVE-2025-4517 defeats with over-long paths):

- a name is relative, without `..`, and never goes *through* a link or a file: every
  member is written below real directories only;
- a name appears once (a directory may be repeated): no member replaces an earlier one;
- a hard link names an earlier regular file of the archive;
- a symbolic link resolves inside the tree, followed component by component through the
  archive's own links exactly as the kernel would (so `s/..` climbs from where `s`
  points, not lexically), with every link of the archive present, whatever its position;
- at most `max_members` members, `max_member_bytes` per file, `max_total_bytes` in all.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["file", "dir", "symlink", "hardlink"]
Parts = tuple[str, ...]
MAX_LINK_FOLLOWS = 40  # the kernel's own limit (MAXSYMLINKS) per resolution


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what one release archive may unpack to (see docs/runtimes.md)."""

    max_members: int = 100_000
    max_member_bytes: int = 4 << 30  # 4 GiB
    max_total_bytes: int = 8 << 30  # 8 GiB

    def __post_init__(self) -> None:
        if min(self.max_members, self.max_member_bytes, self.max_total_bytes) < 0:
            raise ValueError("archive limits must be >= 0")


class UnsafeArchive(ValueError):
    """A member, or the tree they make together, breaks a rule: the whole archive is
    refused."""


@dataclass(frozen=True)
class Entry:
    parts: Parts  # the normalised name, () for the root itself ("./")
    kind: Kind
    size: int = 0
    link: str = ""  # symlink target as written, or the hard link's normalised name

    @property
    def name(self) -> str:
        return "/".join(self.parts) or "."


def entry_of(member: tarfile.TarInfo) -> Entry:
    """The member as plain data; UnsafeArchive for devices, fifos, sparse files, unsafe
    names."""
    parts = normalise(member.name)
    if member.isdev():
        raise UnsafeArchive(f"{member.name!r} is a device or fifo")
    if member.issparse():
        raise UnsafeArchive(f"{member.name!r} is a sparse file")
    if member.isdir():
        return Entry(parts, "dir")
    if member.issym():
        return Entry(parts, "symlink", link=_utf8(member.linkname))
    if member.islnk():
        return Entry(parts, "hardlink", link="/".join(normalise(member.linkname)))
    if member.isreg():
        return Entry(parts, "file", size=member.size)
    raise UnsafeArchive(f"{member.name!r} has an unsupported type {member.type!r}")


def normalise(name: str) -> Parts:
    """A member name as path components: `./a//b/` is ("a", "b"). UnsafeArchive for an
    absolute name, a `..` component, a NUL byte, or bytes that are not UTF-8."""
    name = _utf8(name)
    if name.startswith(("/", "\\")) or "\0" in name:
        raise UnsafeArchive(f"{name!r} leaves the release directory")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if any(".." in (p, *p.split("\\")) for p in parts):
        raise UnsafeArchive(f"{name!r} leaves the release directory")
    return parts


def _utf8(name: str) -> str:
    """`name` if it is UTF-8 text; UnsafeArchive for other bytes (tarfile keeps them as
    surrogates, which no file list, log line or JSON report can hold)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeArchive(f"{name.encode('utf-8', 'replace')!r} is not UTF-8") from None
    return name


@dataclass
class ArchiveTree:
    """The tree the members build, checked as they come. `add` raises UnsafeArchive."""

    limits: ArchiveLimits = field(default_factory=ArchiveLimits)
    entries: dict[Parts, Entry] = field(default_factory=dict)
    members: int = 0
    total_bytes: int = 0

    def add(self, entry: Entry) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise UnsafeArchive(f"more than {self.limits.max_members} members")
        if entry.size > self.limits.max_member_bytes:
            raise UnsafeArchive(
                f"{entry.name!r} is {entry.size} bytes, over {self.limits.max_member_bytes}"
            )
        self.total_bytes += entry.size
        if self.total_bytes > self.limits.max_total_bytes:
            raise UnsafeArchive(f"unpacks to more than {self.limits.max_total_bytes} bytes")
        if not entry.parts:
            if entry.kind != "dir":
                raise UnsafeArchive(f"a {entry.kind} named {entry.name!r}")
            return
        for depth in range(1, len(entry.parts)):
            above = self.entries.get(entry.parts[:depth])
            if above is not None and above.kind != "dir":
                where = "/".join(entry.parts[:depth])
                raise UnsafeArchive(f"{entry.name!r} goes through the {above.kind} {where!r}")
            if above is None:
                self.entries[entry.parts[:depth]] = Entry(entry.parts[:depth], "dir")
        earlier = self.entries.get(entry.parts)
        if earlier is not None and not (earlier.kind == entry.kind == "dir"):
            raise UnsafeArchive(f"{entry.name!r} appears twice")
        if entry.kind == "hardlink":
            target = self.entries.get(tuple(entry.link.split("/")) if entry.link else ())
            if target is None or target.kind != "file":
                raise UnsafeArchive(
                    f"hard link {entry.name!r} -> {entry.link!r} is not an earlier file"
                )
        self.entries[entry.parts] = entry

    def links(self) -> list[Entry]:
        return [e for e in self.entries.values() if e.kind == "symlink"]

    def check_links(self) -> None:
        """Every symbolic link resolves inside the tree; call once all members are in."""
        for link in self.links():
            if link.link.startswith("/") or not link.link:
                raise UnsafeArchive(f"link {link.name!r} -> {link.link!r} is absolute or empty")
            if self.resolve(link.parts[:-1], link.link) is None:
                raise UnsafeArchive(
                    f"link {link.name!r} -> {link.link!r} leaves the release directory"
                )

    def resolve(self, base: Parts, target: str) -> Parts | None:
        """Where `target`, read from directory `base`, lands in the tree, following the
        archive's links; None when it climbs out or follows too many links."""
        follows = [0]
        return self._walk(base, target, follows)

    def _walk(self, base: Parts, target: str, follows: list[int]) -> Parts | None:
        path = list(base)
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not path:
                    return None
                path.pop()
                continue
            path.append(part)
            entry = self.entries.get(tuple(path))
            if entry is not None and entry.kind == "symlink":
                follows[0] += 1
                if follows[0] > MAX_LINK_FOLLOWS or entry.link.startswith("/"):
                    return None
                landed = self._walk(tuple(path[:-1]), entry.link, follows)
                if landed is None:
                    return None
                path = list(landed)
        return tuple(path)
