"""Instructions per second of the two engines on an ALU-and-branch loop with stack traffic.

Run: python benchmarks/bench_interpreter.py [iterations]
The loop body (9 instructions) adds, xors, shifts, spills to and reloads from the stack and
branches back; the figure counts every executed instruction. Beside the two engines it prints
what the live kernel's BPF_PROG_TEST_RUN reports for the same program (its JIT), where the
process may use bpf(): the live verifier walks every iteration of the bounded loop, so that
program runs LIVE_ITERATIONS times.
"""

from __future__ import annotations

import sys
import time

from bpfsys import bpf
from bpfsys.abi import ProgType
from bpfsys.asm import assemble_text, encode
from bpfsys.backend import LiveBackend
from bpfsys.syscall import SyscallError
from kernelsim.prog.interpreter.conformance import UBPF_HELPERS
from kernelsim.prog.interpreter.runtime import Engine, Executable, RunEnv

LOOP = """
    mov %r0, 0
    mov %r1, 0
    mov %r2, {n}
    stxdw [%r10-8], %r0
loop:
    add %r1, 1
    ldxdw %r3, [%r10-8]
    add %r3, %r1
    xor %r3, 0x55
    lsh %r3, 1
    stxdw [%r10-8], %r3
    and %r3, 0xff
    add %r0, %r3
    jlt %r1, %r2, loop
    exit
"""
BODY = 9
SETUP = 5
REPEATS = 3
"""Best of: the machine may be shared."""
LIVE_ITERATIONS = 10_000
"""Few enough for the live verifier's 1M processed-instruction limit."""


def measure(engine: Engine, iterations: int) -> float:
    exe = Executable(encode(assemble_text(LOOP.format(n=iterations))), name="bench")
    if engine is Engine.COMPILED:
        exe.compiled()  # compile outside the timed run, as PROG_LOAD does
    best = float("inf")
    for _ in range(REPEATS):
        env = RunEnv(UBPF_HELPERS, engine=engine, budget=1 << 62)
        start = time.perf_counter()
        exe.run(env, 0)
        best = min(best, time.perf_counter() - start)
    return (iterations * BODY + SETUP) / best


def live_ns_per_insn() -> float | None:
    """Nanoseconds per instruction by the live kernel's BPF_PROG_TEST_RUN (None: no bpf())."""
    backend = LiveBackend()
    insns = assemble_text(LOOP.format(n=LIVE_ITERATIONS))
    try:
        with bpf.prog_load(ProgType.SOCKET_FILTER, insns, backend=backend) as prog:
            result = bpf.prog_test_run(prog, bytes(64), repeat=1000, backend=backend)
    except SyscallError as exc:
        print(f"live kernel: {exc}")
        return None
    return result.duration / (LIVE_ITERATIONS * BODY + SETUP)


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    compiled = measure(Engine.COMPILED, iterations)
    naive = measure(Engine.NAIVE, max(iterations // 50, 1000))
    print(f"compiled: {compiled / 1e6:.1f} M insns/s")
    print(f"naive:    {naive / 1e6:.2f} M insns/s")
    print(f"ratio:    {compiled / naive:.0f}x")
    live = live_ns_per_insn()
    if live is not None:
        print(f"live JIT: {live:.2f} ns/insn ({1e3 / live:.0f} M insns/s, BPF_PROG_TEST_RUN)")
        print(f"compiled: {1e9 / compiled:.1f} ns/insn, {1e9 / compiled / live:.0f}x the JIT")


if __name__ == "__main__":
    main()
