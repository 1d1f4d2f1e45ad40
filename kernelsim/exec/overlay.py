"""The simulated kernel's files, as a traced program opens them.

Theory of operation
-------------------
A program reads the kernel's files for what it cannot ask bpf() (the CPU lists, tracepoint ids
in tracefs, sysctls, a map's memlock in /proc/self/fdinfo/<fd>) and checks that a pin path is
on a bpffs with statfs(2). Those must be the simulated kernel's answers, so open, openat and
statfs are sent to the supervisor, which answers from the simulated files and lets every other
path continue to the real file system.

Rules for open/openat (absolute paths only; a relative one is the program's own business):

* /proc/self, /proc/thread-self and /proc/<the caller's pid or tid> lead to the caller's own
  fdinfo: /proc/.../fdinfo/<fd> of a simulated fd is the simulated kernel's text for it (an fd
  of any other file: the real one);
* a path the simulated kernel has a file for (`kernel.vfs`), bpffs pins aside, opens as a
  snapshot of its content taken at open time, in a new memfd; for writing: EACCES (writes to
  simulated files are not supported, see docs/exec.md);
* everything else continues to the real file system.

statfs of a path inside a simulated bpffs mount answers as the kernel's bpffs does (f_type
BPF_FS_MAGIC; ENOENT for a missing path); other paths continue.
"""

from __future__ import annotations

import errno
import os
import re
import struct
from typing import Final

from kernelsim.bpffs import Bpffs
from kernelsim.errors import fail
from kernelsim.exec.seccomp import BPF_FS_MAGIC
from kernelsim.kernel import Kernel
from kernelsim.vfs import normalize

PATH_MAX: Final = 4096
_PROC_FDINFO: Final = re.compile(r"^/proc/(self|thread-self|\d+)(/task/\d+)?/fdinfo/(\d+)$")
STATFS: Final = struct.Struct("<qqqqqqqiiqqq4q")
"""struct statfs (x86_64 and arm64): f_type, f_bsize, f_blocks, f_bfree, f_bavail, f_files,
f_ffree, f_fsid[2], f_namelen, f_frsize, f_flags, f_spare[4]."""
ST_VALID: Final = 0x20
ST_RELATIME: Final = 0x1000
BPFFS_FSID: Final = (0x28, 0)
"""f_fsid of a bpffs as measured on 6.18 (the anonymous device number)."""


def _bpffs_mount(kernel: Kernel, path: str) -> str | None:
    for mount in kernel.subsystem(Bpffs).mounts:
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            return mount
    return None


def simulated_path(kernel: Kernel, raw: str, caller_ids: tuple[int, int]) -> str | None:
    """The simulated file an open of absolute `raw` names, or None for a real path;
    `caller_ids` are the caller's (tgid, tid)."""
    path = normalize(raw)
    fdinfo = _PROC_FDINFO.match(path)
    if fdinfo is not None:
        who = fdinfo.group(1)
        if who not in ("self", "thread-self") and int(who) not in caller_ids:
            return None
        fd = int(fdinfo.group(3))
        return f"/proc/self/fdinfo/{fd}" if kernel.fds.lookup(fd) is not None else None
    if _bpffs_mount(kernel, path) is not None:
        return None
    return path if kernel.vfs.lookup(path) is not None else None


def open_snapshot(kernel: Kernel, path: str, flags: int) -> int:
    """A memfd holding the content of simulated file `path`, positioned at its start."""
    if flags & os.O_ACCMODE != os.O_RDONLY:
        fail(errno.EACCES, f"{path}: writing simulated files is not supported under exec")
    if flags & os.O_DIRECTORY:
        fail(errno.ENOTDIR, f"{path} is a file")
    content = kernel.vfs.read(path)
    memfd = os.memfd_create(os.path.basename(path) or "file", os.MFD_CLOEXEC)
    try:
        os.write(memfd, content)
        os.lseek(memfd, 0, os.SEEK_SET)
    except OSError:
        os.close(memfd)
        raise
    return memfd


def bpffs_statfs(kernel: Kernel, raw: str) -> bytes | None:
    """struct statfs for absolute `raw` inside a simulated bpffs (ENOENT, ENOTDIR as a lookup
    there), or None for a path outside every simulated bpffs."""
    path = normalize(raw)
    if _bpffs_mount(kernel, path) is None:
        return None
    kernel.subsystem(Bpffs).lookup(raw)
    page = kernel.config.page_size
    return STATFS.pack(
        BPF_FS_MAGIC, page, 0, 0, 0, 0, 0, *BPFFS_FSID, 255, page, ST_VALID | ST_RELATIME, 0, 0,
        0, 0,
    )  # fmt: skip
