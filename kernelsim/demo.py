"""The example job: a map, a program that reads it, a test run and a rejected load.

Runs on any backend; `kernelsim demo` runs it on the simulator by default, `--live` on the live
kernel. Prints what it did and what came back.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from bpfsys import bpf
from bpfsys.abi import BpfFunc, MapType, ProgType
from bpfsys.asm import assemble_text
from bpfsys.backend import Backend, use_backend
from bpfsys.features import probe_all

LOOKUP_PROGRAM = f"""
    mov64 %r1, 0
    stxw [%r10-4], %r1
    lddw %r1, map_fd({{map_fd}})
    mov64 %r2, %r10
    add64 %r2, -4
    call {int(BpfFunc.MAP_LOOKUP_ELEM)}
    jeq %r0, 0, +2
    ldxdw %r0, [%r0+0]
    exit
    mov64 %r0, 0
    exit
"""
"""Return the u64 stored under key 0 of the map, or 0."""

REJECTED_PROGRAM = "mov64 %r0, %r1\nldxdw %r0, [%r2+0]\nexit"
"""Reads through r2, which the program never set: every verifier refuses it."""


def run(backend: Backend, say: Callable[[str], None] = print) -> int:
    """Run the example on `backend`; returns the program's test-run result."""
    with use_backend(backend), bpf.map_create(MapType.ARRAY, 4, 8, 4, name="demo_map") as map_fd:
        say(f"created ARRAY map fd={map_fd.fileno()} (4-byte keys, 8-byte values, 4 entries)")
        for key in range(4):
            bpf.map_update_elem(map_fd, struct.pack("<I", key), struct.pack("<Q", 1000 + key))
        values = [
            struct.unpack("<Q", bpf.map_lookup_elem(map_fd, struct.pack("<I", k), 8) or b"")[0]
            for k in range(4)
        ]
        say(f"map contents: {values}")
        insns = assemble_text(LOOKUP_PROGRAM.format(map_fd=map_fd.fileno()))
        with bpf.prog_load(ProgType.SOCKET_FILTER, insns, name="demo_prog") as prog_fd:
            say(f"loaded a {len(insns)}-instruction socket filter, fd={prog_fd.fileno()}")
            result = bpf.prog_test_run(prog_fd, bytes(64), repeat=10)
            say(f"test run x10 on a 64-byte packet: retval={result.retval}")
        try:
            bpf.prog_load(ProgType.SOCKET_FILTER, assemble_text(REJECTED_PROGRAM)).close()
        except bpf.VerifierError as exc:
            said = [ln for ln in exc.log.splitlines() if ln and not ln.startswith("processed ")]
            say(f"rejected load: errno {exc.errno}, verifier says: {said[-1] if said else '?'}")
        features = probe_all()
        say(
            "features: "
            + ", ".join(f"{f.value}={'yes' if ok else 'no'}" for f, ok in features.items())
        )
        return result.retval
