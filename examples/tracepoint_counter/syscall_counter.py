"""Count the calls of one system call per process, with a tracepoint program.

A BPF_PROG_TYPE_TRACEPOINT program on ``syscalls/sys_enter_<name>`` adds one to a HASH map
entry keyed by the caller's pid (the tgid half of bpf_get_current_pid_tgid); `SyscallCounter`
loads it, attaches it with `bpfsys.attach.attach_tracepoint` (a perf_event link where the kernel
has them, SET_BPF + ENABLE before) and reads the counts back.

Everything goes through a bpfsys backend: the live kernel by default, the simulated one with
``BPFSYS_BACKEND=sim`` (or ``sim:kernel=5.4``), or any backend passed in.

    python examples/tracepoint_counter/syscall_counter.py getpid --seconds 2
"""

from __future__ import annotations

import argparse
import errno
import struct
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Final

from bpfsys import bpf
from bpfsys.abi import MapType, ProgType, UpdateFlag
from bpfsys.asm import assemble_text
from bpfsys.attach import Attachment, attach_tracepoint
from bpfsys.backend import Backend, current_backend
from bpfsys.fd import OwnedFd

MAX_PIDS: Final = 10240
"""Entries of the count map: processes counted at once."""
_KEY = struct.Struct("=I")
_COUNT = struct.Struct("=Q")


def _add_one(counts_fd: int, missing: str) -> str:
    """Look the key at fp-4 up and add one to its count; jump to `missing` when absent."""
    return f"""
        lddw %r1, map_fd({counts_fd})
        mov %r2, %r10
        add %r2, -4
        call 1                          # bpf_map_lookup_elem
        jeq %r0, 0, {missing}
        mov %r1, 1
        lock add [%r0+0], %r1
        ja done
    """


def counter_program(counts_fd: int) -> str:
    """The program: counts[tgid] += 1, inserting 1 for a new tgid (when another CPU inserted
    it first, the insert fails with EEXIST and the one is added to its entry)."""
    return f"""
        call 14                         # bpf_get_current_pid_tgid
        rsh %r0, 32
        stxw [%r10-4], %r0              # key: the tgid
        {_add_one(counts_fd, "insert")}
    insert:
        stdw [%r10-16], 1
        lddw %r1, map_fd({counts_fd})
        mov %r2, %r10
        add %r2, -4
        mov %r3, %r10
        add %r3, -16
        mov %r4, {int(UpdateFlag.NOEXIST)}
        call 2                          # bpf_map_update_elem
        jne %r0, -{errno.EEXIST}, done
        {_add_one(counts_fd, "done")}
    done:
        mov %r0, 0
        exit
    """


class SyscallCounter:
    """Counts of one system call per pid, while attached. Make one with `open`; `close()` (or
    leaving the ``with`` block) detaches and frees everything."""

    def __init__(self, syscall: str, counts: OwnedFd, prog: OwnedFd, attachment: Attachment):
        self.syscall = syscall
        self._counts = counts
        self._prog = prog
        self._attachment = attachment

    @classmethod
    def open(cls, syscall: str, *, backend: Backend | None = None) -> SyscallCounter:
        """Load the counter for `syscall` ("getpid", "openat", ...) and attach it; SyscallError
        from the kernel (ENOENT: no such syscall tracepoint), nothing left open on failure."""
        b = current_backend() if backend is None else backend
        with bpf.map_create(MapType.HASH, _KEY.size, _COUNT.size, MAX_PIDS, backend=b) as counts:
            insns = assemble_text(counter_program(counts.fileno()))
            with bpf.prog_load(ProgType.TRACEPOINT, insns, name="syscall_count", backend=b) as prog:
                attachment = attach_tracepoint(prog, "syscalls", f"sys_enter_{syscall}")
                return cls(syscall, OwnedFd(counts.take(), b), OwnedFd(prog.take(), b), attachment)

    @property
    def attachment(self) -> Attachment:
        return self._attachment

    @property
    def prog(self) -> OwnedFd:
        """The loaded counter program."""
        return self._prog

    def counts(self) -> dict[int, int]:
        """Calls so far, by pid."""
        found: dict[int, int] = {}
        key = bpf.map_get_next_key(self._counts, None, _KEY.size)
        while key is not None:
            value = bpf.map_lookup_elem(self._counts, key, _COUNT.size)
            if value is not None:  # deleted in between: not counted
                found[_KEY.unpack(key)[0]] = _COUNT.unpack(value)[0]
            key = bpf.map_get_next_key(self._counts, key, _KEY.size)
        return found

    def close(self) -> None:
        """Detach, then close the program and the map; idempotent."""
        try:
            self._attachment.detach()
        finally:
            self._prog.close()
            self._counts.close()

    def __enter__(self) -> SyscallCounter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("syscall", help='the system call to count, as "getpid"')
    parser.add_argument("--seconds", type=float, default=1.0, help="how long to count")
    parser.add_argument("--top", type=int, default=10, help="how many pids to show")
    args = parser.parse_args(argv)
    with SyscallCounter.open(args.syscall) as counter:
        time.sleep(args.seconds)
        counts = counter.counts()
    for pid, count in sorted(counts.items(), key=lambda item: -item[1])[: args.top]:
        print(f"{pid:>8} {count:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
