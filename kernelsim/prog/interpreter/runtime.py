"""One run of a program: its memory, frames, budget and helpers (`RunEnv`), and `Executable`,
the decoded program with its compiled form, which both engines run.

Theory of operation
-------------------
`Executable(insns, maps)` decodes the instructions once; `maps` binds each map-loading
ld_imm64 slot to its map (what the kernel's loader does when it rewrites map fds into map
pointers). `Executable.run(env, r1, r2)` runs the main function with the engine `env.engine`:
the compiled one (generated Python, compiled once and cached on the executable) or the naive
reference interpreter. Both share everything else through `RunEnv`:

- frames: every function call (bpf-to-bpf included) gets its own 512-byte stack region; more
  than MAX_CALL_FRAMES nested frames is refused as the verifier refuses it;
- the budget: every executed instruction costs one; running out raises `BudgetExceeded`
  naming the instruction;
- tail calls: at most MAX_TAIL_CALL_CNT per run, counted as the kernel counts them (a call to
  an empty slot counts too);
- map handles and map values get one address each per run, so two lookups of one element give
  the same pointer, as in the kernel; so do subprograms loaded as values (ld_imm64 of
  BPF_PSEUDO_FUNC), which helpers taking callbacks run with `call_function`.
A run ends with r0 masked to 64 bits; `ProgramExit` from a helper ends it early.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from bpfsys.abi import BPF_CMPXCHG, BPF_FETCH, BPF_XCHG
from kernelsim.prog.interpreter.decode import DecodedProgram, decode_program
from kernelsim.prog.interpreter.errors import ProgramExit, ProgramFault
from kernelsim.prog.interpreter.helpers import HelperTable
from kernelsim.prog.interpreter.memory import AddressSpace, Region, RegionKind
from kernelsim.prog.interpreter.semantics import MASK64, atomic_result, to_signed

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel
    from kernelsim.prog.interpreter.compiler import CompiledProgram

STACK_SIZE: Final = 512
MAX_CALL_FRAMES: Final = 8
MAX_TAIL_CALL_CNT: Final = 33
DEFAULT_BUDGET: Final = 10_000_000
"""Instructions one run may execute (the kernel bounds runs statically; this catches loops)."""


class Engine(enum.Enum):
    COMPILED = "compiled"
    NAIVE = "naive"


class RunEnv:
    """The state of one run (a PROG_TEST_RUN repetition, a conformance case, an event)."""

    def __init__(
        self,
        helpers: HelperTable,
        *,
        kernel: Kernel | None = None,
        cpu: int = 0,
        budget: int = DEFAULT_BUDGET,
        engine: Engine = Engine.COMPILED,
    ) -> None:
        self.space = AddressSpace()
        self.helpers = helpers
        self.kernel = kernel
        self.cpu = cpu
        self.budget = budget
        self.engine = engine
        self.depth = 0
        self.tail_calls = 0
        self._handles: dict[int, int] = {}
        self._values: dict[tuple[int, bytes], int] = {}
        self._functions: dict[tuple[int, int], int] = {}

    # -- frames ------------------------------------------------------------------------------
    def enter_frame(self) -> Region:
        """A new stack frame (its region is mapped); ProgramFault beyond MAX_CALL_FRAMES."""
        if self.depth >= MAX_CALL_FRAMES:
            raise ProgramFault(
                f"the call stack of {self.depth + 1} frames is too deep (at most {MAX_CALL_FRAMES})"
            )
        region = Region(RegionKind.STACK, f"stack of frame {self.depth}", bytearray(STACK_SIZE))
        self.space.map(region)
        self.depth += 1
        return region

    def leave_frame(self, region: Region) -> None:
        self.space.unmap(region)
        self.depth -= 1

    # -- objects programs point to -------------------------------------------------------------
    def map_handle(self, bpf_map: Any) -> int:
        """The pointer an ld_imm64 of a map fd puts in a register."""
        address = self._handles.get(id(bpf_map))
        if address is None:
            region = Region(RegionKind.MAP, f"map {bpf_map.name!r}", bytearray(), obj=bpf_map)
            address = self._handles[id(bpf_map)] = self.space.map(region)
        return address

    def map_from_handle(self, address: int) -> Any:
        """The map a helper's map argument points to (ProgramFault for anything else)."""
        region, off = self.space.region_at(address, 0, "use as a map")
        if region.kind is not RegionKind.MAP or off:
            raise ProgramFault(f"{address:#x} is not a map (it points into the {region.name})")
        return region.obj

    def value_pointer(self, bpf_map: Any, key: bytes) -> int:
        """The address of the value of `key` in `bpf_map` on this CPU; 0 when it has none."""
        cache_key = (id(bpf_map), key)
        address = self._values.get(cache_key)
        if address is not None:
            return address
        try:
            view = bpf_map.value_view(key, self.cpu)
        except OSError:
            return 0
        if view is None:
            return 0
        writable = not getattr(bpf_map, "rdonly_prog", False)
        region = Region(
            RegionKind.MAP_VALUE, f"value of map {bpf_map.name!r}", view, writable=writable,
            obj=bpf_map,
        )  # fmt: skip
        address = self._values[cache_key] = self.space.map(region)
        return address

    def forget_value(self, bpf_map: Any, key: bytes) -> None:
        """Drop the cached pointer to a value (after the element was deleted or replaced)."""
        address = self._values.pop((id(bpf_map), key), None)
        if address is not None:
            region, _ = self.space.region_at(address, 0, "forget")
            self.space.unmap(region)

    def direct_value(self, bpf_map: Any, off: int) -> int:
        """What ld_imm64 of a map value (BPF_PSEUDO_MAP_VALUE) loads: element 0 + off."""
        address = self.value_pointer(bpf_map, bytes(bpf_map.key_size))
        if not address:
            raise ProgramFault(f"map {bpf_map.name!r} has no value for direct access")
        return address + off

    # -- subprograms as values (callbacks) -------------------------------------------------------
    def function_pointer(self, exe: Executable, start: int) -> int:
        """What ld_imm64 of a subprogram (BPF_PSEUDO_FUNC) loads: an address naming it."""
        address = self._functions.get((id(exe), start))
        if address is None:
            region = Region(
                RegionKind.FUNCTION, f"subprogram at insn {start}", bytearray(), writable=False,
                obj=(exe, start),
            )  # fmt: skip
            address = self._functions[(id(exe), start)] = self.space.map(region)
        return address

    def call_function(self, address: int, args: tuple[int, int, int, int, int]) -> int:
        """Run the subprogram `address` names (a callback) with r1..r5 = `args`; its r0."""
        region, off = self.space.region_at(address, 0, "call as a function")
        if region.kind is not RegionKind.FUNCTION or off:
            raise ProgramFault(f"{address:#x} is not a subprogram (it points into {region.name})")
        exe, start = region.obj
        if self.engine is Engine.NAIVE:
            from kernelsim.prog.interpreter.naive import call_function

            return call_function(exe, self, start, args) & MASK64
        return int(exe.compiled().functions[start](self, *args)) & MASK64

    # -- engine-specific entry points -----------------------------------------------------------
    def entry(self, exe: Executable) -> Callable[[RunEnv, int], int]:
        """Run `exe`'s main function with r1 = ctx in this run (what a tail call jumps to)."""
        if self.engine is Engine.NAIVE:
            from kernelsim.prog.interpreter.naive import call_function

            return lambda env, ctx: call_function(exe, env, 0, (ctx, 0, 0, 0, 0))
        main = exe.compiled().main
        return lambda env, ctx: main(env, ctx, 0, 0, 0, 0)


LD_ABS_CONTEXT_MESSAGE: Final = "ld_abs/ld_ind need r6 to point to a socket buffer context"


def ld_abs(env: RunEnv, ctx: int, offset: int, size: int) -> int:
    """A legacy packet load (ld_abs / ld_ind) through the skb context in r6: the value in host
    order, or the end of the run with r0 = 0 when the bytes are not in the packet."""
    region, off = env.space.region_at(ctx, 0, "ld_abs through r6")
    load = getattr(region, "packet_load", None)
    if load is None or off:
        raise ProgramFault(LD_ABS_CONTEXT_MESSAGE)
    value: int | None = load(to_signed(offset, 32), size)
    if value is None:
        raise ProgramExit(0)
    return value


def atomic(space: AddressSpace, addr: int, size: int, imm: int, src: int, r0: int) -> int:
    """Do the atomic operation `imm` of `size` bytes at `addr`; return the old value."""
    region, off = space.atomic_region(addr, size)
    old = region.load(off, size)
    region.store(off, size, atomic_result(imm, old, src, r0, size * 8))
    return old


def atomic_writes_src(imm: int) -> bool:
    """Whether the old value goes to the source register (fetch forms and xchg)."""
    return imm != BPF_CMPXCHG and (bool(imm & BPF_FETCH) or imm == BPF_XCHG)


class Executable:
    """A decoded program, ready for either engine."""

    def __init__(self, insns: bytes, maps: Mapping[int, Any] | None = None, name: str = "") -> None:
        self.decoded: DecodedProgram = decode_program(insns)
        self.maps: dict[int, Any] = dict(maps or {})
        """ld_imm64 slot index -> the map it loads."""
        self.name = name
        self._compiled: CompiledProgram | None = None

    def compiled(self) -> CompiledProgram:
        """The compiled form (generated and compiled on first use, then cached)."""
        if self._compiled is None:
            from kernelsim.prog.interpreter.compiler import compile_program

            self._compiled = compile_program(self)
        return self._compiled

    def run(self, env: RunEnv, r1: int, r2: int = 0) -> int:
        """Run the main function with r1, r2; r0 at exit. BpfRuntimeError on a refused
        operation (naming the instruction)."""
        try:
            if env.engine is Engine.NAIVE:
                from kernelsim.prog.interpreter.naive import call_function

                r0 = call_function(self, env, 0, (r1, r2, 0, 0, 0))
            else:
                r0 = self.compiled().run(env, r1, r2)
        except ProgramExit as done:
            r0 = done.value
        return r0 & MASK64
