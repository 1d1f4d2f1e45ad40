"""Running the bpf_conformance suite as uBPF's conformance plugin runs it.

Each case's program runs with r1 = a pointer to a private copy of its ``-- mem`` bytes and
r2 = their length (r1 = r2 = 0 without memory), no verifier, and the plugin's helpers
(uBPF's test_helpers.h): 0 gather_bytes, 1 memfrob, 2 no_op, 3 sqrti, 4 strcmp_ext,
5 unwind (which ends the run with r0 = 0 when its argument is 0). The result is r0 at exit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import attrs

from bpfsys.asm import encode
from bpfsys.conformance import ConformanceCase, load_cases
from kernelsim.prog.interpreter.errors import BpfRuntimeError, ProgramExit
from kernelsim.prog.interpreter.helpers import HelperTable
from kernelsim.prog.interpreter.memory import Region, RegionKind
from kernelsim.prog.interpreter.runtime import Engine, Executable, RunEnv

UNWIND_HELPER: Final = 5
_UBPF_NAMES: Final = {0: "gather_bytes", 1: "memfrob", 2: "no_op", 3: "sqrti", 4: "strcmp_ext",
                      5: "unwind"}  # fmt: skip
UBPF_HELPERS = HelperTable(
    "the uBPF conformance plugin", named=lambda i: _UBPF_NAMES.get(i, f"#{i}")
)


@UBPF_HELPERS.register(0)
def _gather_bytes(env: RunEnv, a: int, b: int, c: int, d: int, e: int) -> int:
    return (a & 0xFF) << 32 | (b & 0xFF) << 24 | (c & 0xFF) << 16 | (d & 0xFF) << 8 | e & 0xFF


@UBPF_HELPERS.register(1)
def _memfrob(env: RunEnv, ptr: int, size: int, c: int, d: int, e: int) -> int:
    data = env.space.read_bytes(ptr, size)
    env.space.write_bytes(ptr, bytes(byte ^ 42 for byte in data))
    return 0


@UBPF_HELPERS.register(2)
def _no_op(env: RunEnv, a: int, b: int, c: int, d: int, e: int) -> int:
    return 0


@UBPF_HELPERS.register(3)
def _sqrti(env: RunEnv, a: int, b: int, c: int, d: int, e: int) -> int:
    return int(math.sqrt(a))


def _cstring(env: RunEnv, addr: int) -> bytes:
    out = bytearray()
    while (byte := env.space.read_bytes(addr + len(out), 1)) != b"\0":
        out += byte
    return bytes(out)


@UBPF_HELPERS.register(4)
def _strcmp_ext(env: RunEnv, a: int, b: int, c: int, d: int, e: int) -> int:
    left, right = _cstring(env, a) + b"\0", _cstring(env, b) + b"\0"
    for x, y in zip(left, right, strict=False):
        if x != y:
            return x - y
    return 0


@UBPF_HELPERS.register(UNWIND_HELPER)
def _unwind(env: RunEnv, a: int, b: int, c: int, d: int, e: int) -> int:
    if a == 0:
        raise ProgramExit(0)
    return a


@attrs.frozen
class ConformanceResult:
    """One case on one engine: r0 (None when the run failed, with `error` saying why)."""

    name: str
    engine: Engine
    expected: int | None
    result: int | None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.result == self.expected


def run_case(case: ConformanceCase, engine: Engine = Engine.COMPILED) -> ConformanceResult:
    """Run one case as the uBPF plugin does."""
    exe = Executable(encode(case.program()), name=case.name)
    env = RunEnv(UBPF_HELPERS, engine=engine)
    r1 = 0
    if case.mem:
        r1 = env.space.map(Region(RegionKind.MEMORY, "input memory", bytearray(case.mem)))
    try:
        result = exe.run(env, r1, len(case.mem))
    except BpfRuntimeError as error:
        return ConformanceResult(case.name, engine, case.result, None, str(error))
    return ConformanceResult(case.name, engine, case.result, result)


def run_conformance(
    directory: Path | str, engines: Iterable[Engine] = (Engine.COMPILED,)
) -> list[ConformanceResult]:
    """Every ``*.data`` case of `directory` on each engine, sorted by name."""
    cases = load_cases(Path(directory))
    return [run_case(case, engine) for case in cases for engine in engines]
