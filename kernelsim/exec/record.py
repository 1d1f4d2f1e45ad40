"""`kernelsim exec --record`: a native program's calls, in the in-process recorder's format.

Theory of operation
-------------------
The session's simulator is wrapped in a `RecordingBackend` whose seams are set to the traced
program's side of each call:

* memory: the pointers in an attr are the program's addresses, so the recorder reads and
  writes through the session's `RemoteMemory` (whose pid is the calling thread's while a call
  is served), as the simulator does;
* learning what a new fd is (OBJ_GET, *_GET_FD_BY_ID): when the event is written the new fd is
  still a stand-in, a placeholder parked in the fd table with its object; the object's fdinfo
  fields say what it is, with no call at all.

The fds the program holds are its own numbers, which the supervisor learns only when the answer
is delivered, and the program's close() is no call the supervisor sees: only the release of its
file is (`kernelsim.exec.closewatch`). So the session tells the recording, and it does:

* delivered a new file as the program's fd N: bind the call's symbol to N, note N's inode;
* could not deliver a new file (the task is gone, EMFILE): write the close of the call's symbol;
* switched the program's fd N to another file (a perf event's ring): note N's new inode;
* forgot an inode (its last file is gone): write the close of each symbol noted with it.

A release is applied before the next call is served, so each close comes before the calls that
follow it in the program, and every file left at the program's exit is closed at the end. Files
of an object that the program maps (an mmapable array, a ring buffer, a perf ring) share one
inode: their closes come together, when the last of them goes.
"""

from __future__ import annotations

import os

from bpfsys.backend import Backend
from kernelsim.exec.remote_fds import InodeKey, PendingFile, RemoteFdTable, inode_key
from kernelsim.scenario import RecordingBackend
from kernelsim.scenario.learn import fd_info_of
from kernelsim.scenario.symbols import FdInfo
from kernelsim.usermem import UserMemory


class ExecRecording:
    """The recording of one exec session's calls (module docstring); `backend` is what the
    server calls."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        inner: Backend,
        memory: UserMemory,
        fds: RemoteFdTable,
        source: str,
    ) -> None:
        self._fds = fds
        self._inode_of: dict[int, InodeKey] = {}
        """The program's fd numbers that have symbols -> the inode of their file."""
        self.backend = RecordingBackend(
            inner, path, source=source, memory=memory, learn=self._learn, stand_in_fds=True
        )
        fds.on_forget = self._forgotten

    def _learn(self, stand_in: int, kind: str) -> FdInfo:
        obj = self._fds.parked(stand_in)
        return FdInfo(kind) if obj is None else fd_info_of(dict(obj.fdinfo()), kind)

    def delivered(self, pending: PendingFile | None, fd: int) -> None:
        """`pending` is the program's `fd` now (its srcfd still open)."""
        if pending is None or pending.stand_in is None:
            return
        self._inode_of[fd] = inode_key(pending.srcfd)
        self.backend.fd_delivered(pending.stand_in, fd)

    def undelivered(self, pending: PendingFile | None) -> None:
        """`pending` never reached the program."""
        if pending is not None and pending.stand_in is not None:
            self.backend.fd_undelivered(pending.stand_in)

    def replaced(self, fd: int, pending: PendingFile) -> None:
        """The program's `fd` is `pending`'s file now (its srcfd still open)."""
        if fd in self._inode_of:
            self._inode_of[fd] = inode_key(pending.srcfd)

    def _forgotten(self, key: InodeKey) -> None:
        for fd in [fd for fd, inode in self._inode_of.items() if inode == key]:
            del self._inode_of[fd]
            self.backend.fd_closed(fd)

    def close(self) -> None:
        """Write the end marker (the program is gone); idempotent."""
        self.backend.close_recording()


__all__ = ["ExecRecording"]
