"""A small bpfsys session for scenario tests: every kind of memory a call reads or writes."""

from __future__ import annotations

import struct

from bpfsys import bpf
from bpfsys.abi import MapFlag, MapType, ProgType
from bpfsys.asm import assemble_text
from bpfsys.backend import Backend, use_backend
from bpfsys.syscall import SyscallError

PROGRAM = """
    mov64 %r1, 0
    stxw [%r10-4], %r1
    lddw %r1, map_fd({map_fd})
    mov64 %r2, %r10
    add64 %r2, -4
    call 1
    mov64 %r0, 0
    exit
"""


def session(backend: Backend, value: int = 42, *, program: bool = True) -> list[object]:
    """Run the session on `backend` (with a program load and test run unless `program` is
    False); what the code saw, for comparing runs."""
    seen: list[object] = []
    made = bpf.map_create(
        MapType.HASH, 4, 8, 4, name="scn", flags=MapFlag.NO_PREALLOC, backend=backend
    )
    with use_backend(backend), made as m:
        bpf.map_update_elem(m, struct.pack("<I", 1), struct.pack("<Q", value))
        seen.append(bpf.map_lookup_elem(m, struct.pack("<I", 1), 8))
        seen.append(bpf.map_lookup_elem(m, struct.pack("<I", 9), 8))
        seen.append(bpf.map_get_next_key(m, None, 4))
        try:
            bpf.map_update_elem(m, struct.pack("<I", 1), bytes(8), flags=1)
        except SyscallError as exc:
            seen.append(exc.errno)
        seen.append(bpf.map_info(m).max_entries)
        seen.append(bpf.possible_cpus(backend=backend))
        if not program:
            return seen
        insns = assemble_text(PROGRAM.format(map_fd=m.fileno()))
        with bpf.prog_load(ProgType.SOCKET_FILTER, insns, name="scn") as prog:
            seen.append(bpf.prog_test_run(prog, bytes(16)).retval)
            seen.append(len(bpf.prog_map_ids(prog)))
    return seen
