"""Reading downloaded archives defensively: caps on what extraction may produce, and no unsafe members.

An archive from the internet (or from a mirror named in $MINILLM_DATA_URL_<NAME>) is data we have not
checked yet. Two things could go wrong before any checksum is computed:

* a "bomb": a few kilobytes of zip or gzip that inflate to gigabytes (deflate reaches ratios of about
  1000:1) and fill the disk or the memory while being extracted;
* a member named ``/etc/...`` or ``../../x``, or a symbolic / hard link, that a naive ``extractall``
  would write outside the destination folder.

So every extraction here counts the members it sees and the bytes it writes against `Limits`, and stops
at the first member over either cap (before writing it, using the sizes the headers declare, and again
while copying, since a header may lie). Member names must be relative paths without ``..``; in a tar,
links, devices and fifos are refused. Nothing here ever writes a file at a path taken from the archive:
members are read by name and written where the caller says.
"""
from __future__ import annotations

import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath


class ArchiveLimitError(ValueError):
    """An archive breaks a cap or holds an unsafe member; the message names the member and the cap."""


@dataclass(frozen=True)
class Limits:
    """Caps on one extraction: members seen (files, folders, everything) and bytes written or read."""
    max_members: int
    max_bytes: int


def check_member_name(name: str) -> None:
    """Refuse absolute paths, drive letters, backslashes and ``..`` components."""
    path = PurePosixPath(name)
    if path.is_absolute() or "\\" in name or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise ArchiveLimitError(f"member {name!r} has an absolute path or a '..' component; an archive for "
                                "extraction must hold relative paths only")


class Budget:
    """What is left of the `Limits` during one extraction."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.members = 0
        self.bytes = 0

    def member(self, name: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveLimitError(f"more than {self.limits.max_members} members (at {name!r}); that is not "
                                    "the data set's archive")

    def take(self, n: int, name: str) -> None:
        self.bytes += n
        if self.bytes > self.limits.max_bytes:
            raise ArchiveLimitError(f"extracting {name!r} would bring the total past {self.limits.max_bytes} "
                                    "bytes, the cap for this archive; that is not the data set's archive")


def open_zip(path, limits: Limits) -> tuple[zipfile.ZipFile, Budget]:
    """Open a zip and check every member name and the member count before anything is read."""
    zf = zipfile.ZipFile(path)
    budget = Budget(limits)
    try:
        for info in zf.infolist():
            budget.member(info.filename)
            check_member_name(info.filename)
    except BaseException:
        zf.close()
        raise
    return zf, budget


def copy_zip_member(zf: zipfile.ZipFile, name: str, out, budget: Budget, chunk: int = 1 << 20) -> None:
    """Copy member `name` into the file `out`, charging its bytes to `budget` as they come."""
    info = zf.getinfo(name)
    if budget.bytes + info.file_size > budget.limits.max_bytes:  # the declared size: refuse before writing
        budget.take(info.file_size, name)
    with zf.open(info) as src, open(out, "wb") as dst:
        for block in iter(lambda: src.read(chunk), b""):
            budget.take(len(block), name)
            dst.write(block)


def iter_tar_files(path, limits: Limits, wanted):
    """Yield (name, bytes) for each regular file of a tar(.gz) for which `wanted(name)` is true.

    Every member is counted and its name checked, whether wanted or not; links, devices and fifos are
    refused. Only the wanted files are read (into memory: the data sets here are a few hundred MB at most),
    and their bytes are charged to the budget.
    """
    budget = Budget(limits)
    with tarfile.open(path, mode="r|*") as tar:  # a stream: one pass, no index of all members kept
        for member in tar:
            budget.member(member.name)
            check_member_name(member.name)
            if member.issym() or member.islnk():
                raise ArchiveLimitError(f"member {member.name!r} is a link (to {member.linkname!r}); the data "
                                        "archives hold plain files only")
            if not (member.isfile() or member.isdir()):
                raise ArchiveLimitError(f"member {member.name!r} is not a file or a folder (a device or fifo)")
            if member.isfile() and wanted(member.name):
                budget.take(member.size, member.name)  # a tar header's size is the size that will be read
                src = tar.extractfile(member)
                data = src.read()
                if len(data) != member.size:
                    raise ArchiveLimitError(f"member {member.name!r} is cut short: {len(data)} of {member.size} "
                                            "bytes (a download cut short?)")
                yield member.name, data
            tar.members = []  # stream mode still keeps every TarInfo; 100k of them are not needed
