"""The simulated kernel's files: sysfs, procfs, tracefs and bpffs paths served by read_file and
write_file.

Theory of operation
-------------------
A path maps to a `VirtualFile`: a reader (bytes, computed on each read) and an optional writer.
Subsystems register their files at kernel start (CPU lists, sysctls, PMU types, tracepoints)
or a `resolver` for a whole folder whose files come and go (`/proc/self/fdinfo/<fd>`). Folders
exist implicitly where files lie below them. Errors are the kernel's: ENOENT for a missing path,
EISDIR for reading a folder, EACCES for writing a read-only file, EINVAL for a write the
file's handler refuses.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable

import attrs

from kernelsim.errors import fail

Reader = Callable[[], bytes]
Writer = Callable[[bytes], None]


@attrs.frozen
class VirtualFile:
    """A file: `read()` gives its whole content; `write` (None: read-only) takes one write."""

    read: Reader
    write: Writer | None = None


Resolver = Callable[[str], VirtualFile | None]
"""Given the rest of a path below its folder, the file there or None."""


def normalize(path: str) -> str:
    """An absolute path without '.', '..', or repeated and trailing slashes."""
    if not path.startswith("/"):
        fail(errno.ENOENT, f"relative path {path!r} (the simulator knows absolute paths only)")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


class Vfs:
    """Path -> VirtualFile, with resolvers for dynamic folders."""

    def __init__(self) -> None:
        self._files: dict[str, VirtualFile] = {}
        self._resolvers: dict[str, Resolver] = {}

    def add(self, path: str, read: Reader | bytes, write: Writer | None = None) -> None:
        """Register a file; `read` may be fixed bytes."""
        self._files[normalize(path)] = VirtualFile(
            functools.partial(bytes, read) if isinstance(read, bytes) else read, write
        )

    def remove(self, path: str) -> None:
        self._files.pop(normalize(path), None)

    def add_resolver(self, folder: str, resolver: Resolver) -> None:
        """Serve every path below `folder` through `resolver`."""
        self._resolvers[normalize(folder)] = resolver

    def lookup(self, path: str) -> VirtualFile | None:
        path = normalize(path)
        found = self._files.get(path)
        if found is not None:
            return found
        for folder, resolver in self._resolvers.items():
            if path.startswith(folder + "/"):
                return resolver(path[len(folder) + 1 :])
        return None

    def is_dir(self, path: str) -> bool:
        path = normalize(path)
        prefix = path.rstrip("/") + "/"
        return (
            path == "/"
            or any(p.startswith(prefix) for p in self._files)
            or any(f == path or f.startswith(prefix) for f in self._resolvers)
        )

    def read(self, path: str) -> bytes:
        found = self.lookup(path)
        if found is None:
            if self.is_dir(path):
                fail(errno.EISDIR, f"{path} is a directory")
            fail(errno.ENOENT, f"no such file {path}")
        return found.read()

    def write(self, path: str, data: bytes) -> None:
        found = self.lookup(path)
        if found is None:
            if self.is_dir(path):
                fail(errno.EISDIR, f"{path} is a directory")
            fail(errno.ENOENT, f"no such file {path}")
        if found.write is None:
            fail(errno.EACCES, f"{path} is read-only")
        found.write(bytes(data))

    def listdir(self, path: str) -> list[str]:
        """Names directly below folder `path` (static files only)."""
        prefix = normalize(path).rstrip("/") + "/"
        names = {p[len(prefix) :].split("/", 1)[0] for p in self._files if p.startswith(prefix)}
        return sorted(names)
