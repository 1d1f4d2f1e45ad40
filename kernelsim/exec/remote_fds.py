"""The fd table of the traced processes: their fd numbers -> simulated kernel objects.

Theory of operation
-------------------
In exec mode `kernel.fds` is a `RemoteFdTable`: the kernel's subsystems look fds up, install
new ones and mark objects ready through it exactly as through the in-process `FdTable`, and
the numbers they see are the traced program's. `caller` is the thread whose call is being
served (the supervisor sets it before each call).

Files. Each simulated file a program holds is a memfd opened for it by the supervisor (with the
fd's access mode), so dup, fork, SCM_RIGHTS, close and mmap work natively, and its inode names
the object: an fd is resolved by stat(/proc/<caller>/fd/<fd>). An object that the program maps
(an mmapable array, a ring buffer, a perf ring) has one inode for all its files, the memfd
whose pages the simulator writes; any other object gets an inode of its own per file, named
after its anon inode ("bpf-map", "bpf-prog", ...) so that readlink shows the kernel's name in it,
and sized `IDENTITY_SIZE` (sparse: no memory is used).

Transitions of one inode's entry (`_Inode`), as data in `ON_RELEASE`:

* a file is *installed* (the reply carrying its fd succeeded): files += 1, watched for release;
* a file is *released* (`CloseWatcher`: the last fd and mapping of it are gone in every
  process): files -= 1, the object's `file_closed` runs for the fd numbers it was used
  through, and the file's reference is dropped; at files == 0 the entry goes, with the
  simulator's own mappings that stood for the program's (`keep_mapping`), and the object's
  epoll registrations when no other inode of it remains;
* an install whose reply failed is *abandoned*: its reference is dropped at once, and the
  release event its closing will cause is expected and skipped.

Installing is two steps, because the fd number is the program's to choose: `install` (called
by a subsystem inside the call) parks the object and returns a placeholder, a real eventfd of
this process, so that a handler may still set it inheritable; the server then `take`s the
placeholder the handler returned and puts the file in the caller with the reply.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable
from typing import Final, TypeVar

import attrs

from bpfsys.backend import Mapping
from kernelsim.errors import fail
from kernelsim.exec.closewatch import CloseWatcher
from kernelsim.exec.readiness import Readiness
from kernelsim.maps.array import ArrayMap
from kernelsim.maps.ringbuf import RingbufMap
from kernelsim.objects import KernelObject

_Obj = TypeVar("_Obj", bound=KernelObject)
InodeKey = tuple[int, int]
IDENTITY_SIZE: Final = 1 << 40
"""The (sparse) size of a memfd that only names an object: large, so that a program that checks
a file's size before mapping it (CPython's mmap does) leaves the answer to mmap(2) itself."""


@attrs.define(eq=False)
class _Inode:
    obj: KernelObject
    wd: int
    files: int = 0
    modes: set[int] = attrs.field(factory=set)
    numbers: set[int] = attrs.field(factory=set)
    """fd numbers the object was used through (for `file_closed`)."""
    mappings: list[Mapping] = attrs.field(factory=list)
    expected_closes: int = 0
    """Release events of abandoned installs, to be skipped."""


@attrs.frozen
class PendingFile:
    """A file ready to be put in the caller: `srcfd` is this process's fd of it; `stand_in`
    the placeholder a call returned for it, when a call made it (a recorder names the new fd
    by it until the program's number is known)."""

    obj: KernelObject
    srcfd: int
    cloexec: bool
    stand_in: int | None = None


@attrs.frozen
class _Parked:
    obj: KernelObject
    mode: int


def _released(entry: _Inode) -> None:
    """One file of the inode is gone: the object's file release, then its reference."""
    entry.files -= 1
    for number in sorted(entry.numbers) if entry.files == 0 else ():
        entry.obj.file_closed(number)
    entry.obj.put()


def _skipped(entry: _Inode) -> None:
    entry.expected_closes -= 1


ON_RELEASE: Final[dict[bool, Callable[[_Inode], None]]] = {
    True: _skipped,  # an abandoned install's own close
    False: _released,
}
"""What a release event does, by whether an abandoned install's close is expected."""


def backing_fd(obj: KernelObject) -> int | None:
    """The memfd whose pages the simulator writes for `obj`, when the program may map it."""
    if isinstance(obj, ArrayMap | RingbufMap) and obj.memfd >= 0:
        return obj.memfd
    return None


def inode_key(fd: int) -> InodeKey:
    """The inode of this process's `fd`: what names a simulated file."""
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def _mode_of_link(link: os.stat_result) -> int:
    """The access mode of an fd from its /proc/<pid>/fd link's permission bits."""
    readable = bool(link.st_mode & stat.S_IRUSR)
    writable = bool(link.st_mode & stat.S_IWUSR)
    if readable and writable:
        return os.O_RDWR
    return os.O_WRONLY if writable else os.O_RDONLY


class RemoteFdTable:
    """fd numbers of the traced processes -> kernel objects (`kernelsim.fdtable.FileTable`)."""

    def __init__(self, watcher: CloseWatcher, readiness: Readiness) -> None:
        self.caller = 0
        """The thread whose call is being served (`serving`)."""
        self._resolved: dict[int, tuple[int, int]] = {}
        """fd -> (st_dev, st_ino) of the caller's fds met during the call being served."""
        self._watcher = watcher
        self.readiness = readiness
        self._inodes: dict[InodeKey, _Inode] = {}
        self._by_wd: dict[int, InodeKey] = {}
        self._parked: dict[int, _Parked] = {}
        self.on_forget: Callable[[InodeKey], None] | None = None
        """Told of each inode whose last file is gone (a recorder writes the closes)."""

    # -- resolving the caller's fds ------------------------------------------------------------
    def serving(self, tid: int) -> None:
        """A call of thread `tid` is being served (its fds are looked up at most once)."""
        self.caller = tid
        self._resolved.clear()

    def _link(self, fd: int) -> str:
        return f"/proc/{self.caller}/fd/{fd}"

    def _entry(self, fd: int) -> _Inode | None:
        """The entry of the caller's `fd`; None for an fd that is no simulated file; EBADF for
        no open fd."""
        if fd < 0:
            fail(errno.EBADF, f"fd {fd} is not an open fd")
        key = self._resolved.get(fd)
        if key is None:
            try:
                st = os.stat(self._link(fd))
            except OSError:
                fail(errno.EBADF, f"fd {fd} is not an open fd of task {self.caller}")
            key = self._resolved[fd] = (st.st_dev, st.st_ino)
        entry = self._inodes.get(key)
        if entry is not None:
            entry.numbers.add(fd)
        return entry

    def lookup(self, fd: int) -> KernelObject | None:
        try:
            entry = self._entry(fd)
        except OSError:
            return None
        return None if entry is None else entry.obj

    def get(self, fd: int, cls: type[_Obj], wrong_type: int = errno.EINVAL) -> _Obj:
        """As `FdTable.get`: EBADF for no open fd, `wrong_type` for a file that is not a `cls`."""
        entry = self._entry(fd)
        if entry is None:
            fail(wrong_type, f"fd {fd} is a file of the program, not a {cls.__name__}")
        obj = entry.obj
        if not isinstance(obj, cls):
            fail(wrong_type, f"fd {fd} is a {type(obj).__name__}, not a {cls.__name__}")
        return obj

    def mode(self, fd: int) -> int:
        try:
            entry = self._entry(fd)
        except OSError:
            return os.O_RDWR
        if entry is None:
            return os.O_RDWR
        if len(entry.modes) == 1:
            return next(iter(entry.modes))
        return _mode_of_link(os.lstat(self._link(fd)))

    # -- installing ------------------------------------------------------------------------------
    def install(self, obj: KernelObject, mode: int = os.O_RDWR) -> int:
        placeholder = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._parked[placeholder] = _Parked(obj, mode)
        return placeholder

    def install_new_ref(self, obj: KernelObject, mode: int = os.O_RDWR) -> int:
        obj.hold()
        return self.install(obj, mode)

    def take(self, placeholder: int) -> PendingFile | None:
        """The file for the placeholder a handler returned (None: not a placeholder)."""
        parked = self._parked.pop(placeholder, None)
        if parked is None:
            return None
        cloexec = not os.get_inheritable(placeholder)
        os.close(placeholder)
        try:
            srcfd = self.open_file(parked.obj, parked.mode)
        except OSError:
            parked.obj.put()
            raise
        return PendingFile(parked.obj, srcfd, cloexec, placeholder)

    def parked(self, placeholder: int) -> KernelObject | None:
        """The object a handler's placeholder stands for (None: not a placeholder)."""
        parked = self._parked.get(placeholder)
        return None if parked is None else parked.obj

    def drop_parked(self) -> None:
        """Undo the installs of a call that failed or returned another value."""
        for placeholder, parked in self._parked.items():
            os.close(placeholder)
            parked.obj.put()
        self._parked.clear()

    def open_file(self, obj: KernelObject, mode: int, backing: int | None = None) -> int:
        """A new open file for `obj` with access `mode` (module docstring), as this process's
        fd: of `backing` (a memfd) when given, else of `backing_fd(obj)` or a new memfd."""
        if backing is None:
            backing = backing_fd(obj)
        if backing is not None:
            return os.open(f"/proc/self/fd/{backing}", mode | os.O_CLOEXEC)
        memfd = os.memfd_create(obj.anon_name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(memfd, IDENTITY_SIZE)
            return os.open(f"/proc/self/fd/{memfd}", mode | os.O_CLOEXEC)
        finally:
            os.close(memfd)

    def installed(self, pending: PendingFile) -> None:
        """The file is the caller's now: count it and watch for its release."""
        self.adopt(pending.obj, pending.srcfd)
        os.close(pending.srcfd)

    def adopt(self, obj: KernelObject, srcfd: int) -> None:
        """Count this process's open file `srcfd`, now also the program's, as a file of `obj`
        holding one reference (the caller hands it over)."""
        self._resolved.clear()  # the caller's fd may be this file now (ADDFD with SETFD)
        key = inode_key(srcfd)
        entry = self._inodes.get(key)
        if entry is None:
            wd = self._watcher.watch(srcfd)
            entry = self._inodes[key] = _Inode(obj, wd)
            self._by_wd[wd] = key
        entry.files += 1
        entry.modes.add(fcntl.fcntl(srcfd, fcntl.F_GETFL) & os.O_ACCMODE)

    def abandoned(self, pending: PendingFile) -> None:
        """The reply failed: the file never reached the program."""
        st = os.fstat(pending.srcfd)
        entry = self._inodes.get((st.st_dev, st.st_ino))
        if entry is not None:
            entry.expected_closes += 1
        os.close(pending.srcfd)
        pending.obj.put()

    def keep_mapping(self, fd: int, mapping: Mapping) -> None:
        """Keep the simulator's `mapping`, made for the caller's mmap of `fd`, until the file
        is gone (the program's own mapping of it keeps the file)."""
        entry = self._entry(fd)
        if entry is None:
            fail(errno.EBADF, f"fd {fd} is no longer a simulated file")
        entry.mappings.append(mapping)

    # -- releases --------------------------------------------------------------------------------
    def on_releases(self) -> None:
        """Apply the release events the watcher has (module docstring)."""
        for wd in self._watcher.releases():
            key = self._by_wd.get(wd)
            if key is None:
                continue
            entry = self._inodes[key]
            ON_RELEASE[entry.expected_closes > 0](entry)
            if entry.files == 0 and entry.expected_closes == 0:
                self._forget(key, entry)

    def _forget(self, key: InodeKey, entry: _Inode) -> None:
        del self._inodes[key]
        del self._by_wd[entry.wd]
        self._watcher.unwatch(entry.wd)
        for mapping in entry.mappings:
            mapping.close()
        if not any(e.obj is entry.obj for e in self._inodes.values()):
            self.readiness.forget(entry.obj)
        if self.on_forget is not None:
            self.on_forget(key)

    def objects(self) -> list[KernelObject]:
        """The objects the traced processes hold files of."""
        unique = {id(entry.obj): entry.obj for entry in self._inodes.values()}
        return list(unique.values())

    def release_all(self) -> None:
        """The traced processes are gone: drop every file's reference."""
        for key, entry in list(self._inodes.items()):
            while entry.files:
                _released(entry)
            entry.expected_closes = 0
            self._forget(key, entry)
        self.drop_parked()

    # -- the rest of FileTable -----------------------------------------------------------------
    def close(self, fd: int) -> None:
        fail(errno.EBADF, f"fd {fd} belongs to a traced program, which closes it itself")

    def set_ready(self, obj: KernelObject) -> None:
        self.readiness.set_ready(obj)

    def clear_ready(self, obj: KernelObject) -> None:
        self.readiness.clear_ready(obj)

    def open_fds(self) -> list[int]:
        """No fds of this process are simulated in exec mode."""
        return []
