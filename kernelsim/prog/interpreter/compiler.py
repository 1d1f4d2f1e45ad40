"""The fast engine: each function of a program becomes one generated Python function.

Theory of operation
-------------------
`compile_program(exe)` writes Python source for every bpf-to-bpf function of `exe`, compiles it
once (`exec`) and returns a `CompiledProgram`. In a generated function:

- registers are local variables r0..r10, always holding clean unsigned 64-bit values;
- basic blocks start at the function's entry and at jump targets; a conditional jump is a side
  exit, so a block runs on after it (an extended block). `while True:` dispatches on the block
  label `L` through a binary tree of `if L < k:` tests; a jump sets `L` and `continue`s;
- a block whose jumps come back to its own start becomes an inner `while True:` loop, so a hot
  loop runs without dispatch;
- stack accesses through r10 with a constant offset index memoryviews of the frame's stack
  (`S8[63]` for an aligned 8-byte slot), other loads and stores go through the typed address
  space (`ld`, `st`), which checks the region and its bounds;
- the instruction budget is charged once per straight-line segment (`bud -= n`), and
  refunded exactly when it runs out, so the error names the instruction the naive engine would;
- every generated line belongs to one instruction; a fault raised while running is located by
  the line of the innermost generated frame in the traceback (nothing is spent tracking pc).
Instructions the verifier would refuse compile to `raise ProgramFault(...)` at their place.
"""

from __future__ import annotations

import itertools
import linecache
import types
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

import attrs

from bpfsys.abi import (
    BPF_ABS,
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_AND,
    BPF_ARSH,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_CMPXCHG,
    BPF_DIV,
    BPF_END,
    BPF_EXIT,
    BPF_JA,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JMP,
    BPF_JMP32,
    BPF_JNE,
    BPF_JSET,
    BPF_JSGE,
    BPF_JSGT,
    BPF_JSLE,
    BPF_JSLT,
    BPF_LD,
    BPF_LDX,
    BPF_LSH,
    BPF_MEMSX,
    BPF_MOD,
    BPF_MOV,
    BPF_MUL,
    BPF_NEG,
    BPF_OR,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_IDX,
    BPF_PSEUDO_MAP_IDX_VALUE,
    BPF_PSEUDO_MAP_VALUE,
    BPF_RSH,
    BPF_ST,
    BPF_STX,
    BPF_SUB,
    BPF_TO_BE,
    BPF_X,
    BPF_XOR,
)
from kernelsim.prog.interpreter import semantics
from kernelsim.prog.interpreter.decode import FP, SIZE_BYTES, Function, Instruction
from kernelsim.prog.interpreter.errors import (
    BpfRuntimeError,
    BudgetExceeded,
    ProgramExit,
    ProgramFault,
    TailCall,
)
from kernelsim.prog.interpreter.runtime import STACK_SIZE, atomic, atomic_writes_src, ld_abs

if TYPE_CHECKING:
    from kernelsim.prog.interpreter.runtime import Executable, RunEnv

M64: Final = "0xFFFFFFFFFFFFFFFF"
M32: Final = "0xFFFFFFFF"
S64: Final = "0x8000000000000000"
S32: Final = "0x80000000"
STACK_VIEWS: Final = {8: "S8", 4: "S4", 2: "S2", 1: "S1"}
VIEW_FORMATS: Final = {8: "Q", 4: "I", 2: "H", 1: "B"}
UNROLL: Final = 4
"""Iterations of a simple loop run per budget check."""
UNROLL_MAX_BODY: Final = 48
_serial = itertools.count()
_LOCATORS: weakref.WeakValueDictionary[str, CompiledProgram] = weakref.WeakValueDictionary()


@attrs.define
class Line:
    """One generated line and the slot it belongs to (-1: function scaffolding)."""

    text: str
    pc: int


class FunctionWriter:
    """Python source for one bpf function."""

    def __init__(self, exe: Executable, function: Function) -> None:
        self.exe = exe
        self.insns = exe.decoded.insns
        self.function = function
        self.lines: list[Line] = []
        self.leaders = self._leaders()
        self.leader_set = set(self.leaders)
        self.views: set[int] = set()
        self.slots = self._promotable_slots()
        """Stack slots kept in local variables: (position, size) -> name."""

    # -- structure -------------------------------------------------------------------------
    def _leaders(self) -> list[int]:
        found = {self.function.start}
        for insn in self._slots():
            if insn.problem is None and insn.ends_block() and insn.op != BPF_EXIT:
                target = insn.index + 1 + insn.jump_offset
                found.add(target)
                if target <= insn.index and insn.index + 1 < self.function.end:
                    found.add(insn.index + 1)  # a loop's exit: loops end their block
        return sorted(found)

    def _stack_accesses(self) -> list[tuple[int, int]] | None:
        """(position, size) of every r10-based access with a constant offset, or None when the
        frame pointer escapes (is read as a value, or used by an atomic)."""
        found: list[tuple[int, int]] = []
        for insn in self._slots():
            if insn.problem is not None:
                continue
            base = _stack_base(insn)
            size = SIZE_BYTES[insn.code & 0x18]
            if base is not None:
                if base == FP:
                    found.append((STACK_SIZE + insn.off, size))
                if insn.cls == BPF_STX and insn.src == FP:
                    return None
            elif FP in _reads(insn):
                return None
        return found

    def _promotable_slots(self) -> dict[tuple[int, int], str]:
        """In a function whose stack does not escape, each in-bounds stack slot that is only
        ever accessed whole, at one size, lives in a local variable."""
        accesses = self._stack_accesses()
        if accesses is None:
            return {}
        kinds = set(accesses)
        promoted: dict[tuple[int, int], str] = {}
        for position, size in kinds:
            if position < 0 or position + size > STACK_SIZE:
                continue
            overlapping = {(p, n) for p, n in kinds if p < position + size and position < p + n}
            if overlapping == {(position, size)}:
                promoted[(position, size)] = f"s{position}"
        return promoted

    def _slots(self) -> Iterator[Instruction]:
        """The function's instructions (second slots of ld_imm64 skipped)."""
        index = self.function.start
        while index < self.function.end:
            insn = self.insns[index]
            yield insn
            index += insn.width() if insn.problem is None else 1

    def emit(self, depth: int, text: str, pc: int = -1) -> None:
        self.lines.append(Line("    " * depth + text, pc))

    def source(self) -> list[Line]:
        start = self.function.start
        body: list[Line] = []
        self.lines = body
        self._dispatch(self.leaders, 3)
        self.lines = []
        self.emit(0, f"def f{start}(env, r1, r2, r3, r4, r5):")
        self.emit(1, "frame = env.enter_frame()")
        self.emit(1, "stack = frame.buf")
        for size in sorted(self.views):
            self.emit(1, f"{STACK_VIEWS[size]} = memoryview(stack).cast('{VIEW_FORMATS[size]}')")
        self.emit(1, f"r10 = frame.address + {STACK_SIZE}")
        self.emit(1, "r0 = r6 = r7 = r8 = r9 = 0")
        for name in sorted(self.slots.values()):
            self.emit(1, f"{name} = 0")
        self.emit(1, "space = env.space")
        self.emit(1, "ld = space.load")
        self.emit(1, "st = space.store")
        self.emit(1, "helpers = env.helpers")
        self.emit(1, "bud = env.budget")
        self.emit(1, "try:")
        self.emit(2, f"L = {start}")
        self.emit(2, "while True:")
        self.lines.extend(body)
        self.emit(1, "except TailCall as tail:")
        self.emit(2, "env.leave_frame(frame)")
        self.emit(2, "frame = None")
        self.emit(2, "return tail.target(env, tail.ctx)")
        self.emit(1, "finally:")
        self.emit(2, "if frame is not None:")
        self.emit(3, "env.leave_frame(frame)")
        return self.lines

    def _dispatch(self, leaders: list[int], depth: int) -> None:
        if len(leaders) == 1:
            self._block(leaders[0], depth)
            return
        middle = len(leaders) // 2
        self.emit(depth, f"if L < {leaders[middle]}:")
        self._dispatch(leaders[:middle], depth + 1)
        self.emit(depth, "else:")
        self._dispatch(leaders[middle:], depth + 1)

    def _block_insns(self, start: int) -> list[Instruction]:
        """The instructions of the extended block at `start`, up to the next leader or an
        unconditional transfer."""
        out: list[Instruction] = []
        index = start
        while index < self.function.end:
            if index != start and index in self.leader_set:
                break
            insn = self.insns[index]
            out.append(insn)
            if insn.problem or not insn.falls_through():
                break
            index += insn.width()
        return out

    def _block(self, start: int, depth: int) -> None:
        insns = self._block_insns(start)
        loops = any(
            i.problem is None and i.ends_block() and i.op != BPF_EXIT
            and i.index + 1 + i.jump_offset == start
            for i in insns
        )  # fmt: skip
        if loops:
            self.emit(depth, "while True:", start)
            depth += 1
            if self._unrollable(insns, start):
                self._unrolled(insns, start, depth)
        self._segments(insns, start, depth, loops)
        if loops:
            self.emit(depth - 1, "continue", start)

    def _unrollable(self, insns: list[Instruction], start: int) -> bool:
        """A loop of one straight segment closed by a conditional jump back to its start,
        without calls: worth running UNROLL iterations per budget check."""
        last = insns[-1]
        body = insns[:-1]
        return (
            len(insns) <= UNROLL_MAX_BODY
            and all(i.problem is None and not i.ends_block() and i.op != BPF_CALL for i in body)
            and not any(i.cls in (BPF_JMP, BPF_JMP32) for i in body)
            and last.problem is None
            and last.ends_block()
            and last.op not in (BPF_JA, BPF_EXIT, BPF_CALL)
            and last.index + 1 + last.jump_offset == start
            and last.index + 1 < self.function.end
        )

    def _unrolled(self, insns: list[Instruction], start: int, depth: int) -> None:
        """UNROLL copies of the loop body under one budget charge; an early exit refunds the
        iterations not run. Below UNROLL iterations of budget, the exact loop that follows runs."""
        count = len(insns)
        last = insns[-1]
        leave = f"L = {last.index + 1}; break"
        self.emit(depth, f"if bud >= {UNROLL * count}:", start)
        self.emit(depth + 1, f"bud -= {UNROLL * count}", start)
        for copy in range(1, UNROLL + 1):
            for insn in insns[:-1]:
                self._insn(insn, depth + 1, start, True)
            if copy < UNROLL:
                self.emit(depth + 1, f"if not ({_condition(last)}):", last.index)
                self.emit(depth + 2, f"bud += {(UNROLL - copy) * count}; {leave}", last.index)
            else:
                self.emit(depth + 1, f"if {_condition(last)}:", last.index)
                self.emit(depth + 2, "continue", last.index)
                self.emit(depth + 1, leave, last.index)

    def _goto(self, target: int, start: int, in_loop: bool) -> str:
        if in_loop and target == start:
            return "continue"
        return f"L = {target}; {'break' if in_loop else 'continue'}"

    def _segments(self, insns: list[Instruction], start: int, depth: int, in_loop: bool) -> None:
        """Emit the block: each straight-line segment (up to a conditional jump) is charged to
        the budget before it runs."""
        segments: list[list[Instruction]] = [[]]
        for insn in insns:
            segments[-1].append(insn)
            if insn.problem is None and insn.ends_block() and insn.op != BPF_JA:
                segments.append([])
        for segment in filter(None, segments):
            self._charge(segment, depth)
            for insn in segment:
                if insn.problem:
                    self.emit(depth, f"raise ProgramFault({insn.problem!r})", insn.index)
                    return
                self._insn(insn, depth, start, in_loop)
                if not insn.falls_through():
                    return
        last = insns[-1]
        nxt = last.index + last.width()
        if nxt >= self.function.end:
            reason = "execution falls through the end of the function"
            self.emit(depth, f"raise ProgramFault({reason!r})", last.index)
        else:
            self.emit(depth, self._goto(nxt, start, in_loop), last.index)

    def _charge(self, pending: list[Instruction], depth: int) -> None:
        """Charge the budget for a straight-line segment (refund on exhaustion)."""
        pcs = tuple(i.index for i in pending)
        pc = pcs[0]
        self.emit(depth, f"bud -= {len(pcs)}", pc)
        self.emit(depth, "if bud < 0:", pc)
        self.emit(depth + 1, f"budget_exhausted(env, {pcs!r}, bud + {len(pcs)})", pc)

    # -- instructions ----------------------------------------------------------------------
    def _insn(self, insn: Instruction, depth: int, start: int, in_loop: bool) -> None:
        pc = insn.index
        for text in self._insn_lines(insn, start, in_loop):
            self.emit(depth, text, pc)

    def _insn_lines(self, insn: Instruction, start: int, in_loop: bool) -> list[str]:
        cls = insn.cls
        if cls in (BPF_ALU, BPF_ALU64):
            return [_alu(insn)]
        if cls == BPF_LDX:
            return [self._load(insn)]
        if cls in (BPF_ST, BPF_STX):
            return self._store(insn)
        if cls == BPF_LD:
            return [self._ld(insn)]
        return self._jump(insn, start, in_loop)

    def _stack_index(self, base: int, off: int, size: int) -> str | None:
        """The view subscript of an aligned in-bounds stack access through r10, else None."""
        position = STACK_SIZE + off
        if base != FP or position < 0 or position + size > STACK_SIZE:
            return None
        promoted = self.slots.get((position, size))
        if promoted is not None:
            return promoted
        if position % size:
            return None
        self.views.add(size)
        return f"{STACK_VIEWS[size]}[{position // size}]"

    def _load(self, insn: Instruction) -> str:
        size = SIZE_BYTES[insn.code & 0x18]
        value = (
            self._stack_index(insn.src, insn.off, size) or f"ld(r{insn.src} + {insn.off}, {size})"
        )
        if insn.code & 0xE0 == BPF_MEMSX:
            sign = 1 << (size * 8 - 1)
            value = f"(({value} ^ {sign}) - {sign}) & {M64}"
        return f"r{insn.dst} = {value}"

    def _store(self, insn: Instruction) -> list[str]:
        size = SIZE_BYTES[insn.code & 0x18]
        mask = (1 << (size * 8)) - 1
        if insn.cls == BPF_STX and insn.code & 0xE0 == BPF_ATOMIC:
            call = f"atomic(space, r{insn.dst} + {insn.off}, {size}, {insn.imm}, r{insn.src}, r0)"
            if insn.imm == BPF_CMPXCHG:
                return [f"r0 = {call}"]
            if atomic_writes_src(insn.imm):
                return [f"r{insn.src} = {call}"]
            return [call]
        if insn.cls == BPF_ST:
            value = str(insn.imm & mask)
        else:
            value = f"r{insn.src}" if size == 8 else f"r{insn.src} & {mask:#x}"
        target = self._stack_index(insn.dst, insn.off, size)
        if target is not None:
            return [f"{target} = {value}"]
        return [f"st(r{insn.dst} + {insn.off}, {size}, {value})"]

    def _ld(self, insn: Instruction) -> str:
        size = SIZE_BYTES[insn.code & 0x18]
        if not insn.is_ld_imm64:
            offset = f"{insn.imm}" if insn.code & 0xE0 == BPF_ABS else f"r{insn.src} + {insn.imm}"
            return f"r0 = ld_abs(env, r6, {offset}, {size})"
        dst = f"r{insn.dst}"
        if insn.src == 0:
            return f"{dst} = {insn.imm64:#x}"
        if insn.src == BPF_PSEUDO_FUNC:
            return f"{dst} = env.function_pointer(EXE, {insn.index + 1 + insn.imm})"
        if insn.index not in self.exe.maps:
            reason = f"no map is bound to this ld_imm64 (src={insn.src}, imm={insn.imm})"
            return f"raise ProgramFault({reason!r})"
        if insn.src in (BPF_PSEUDO_MAP_VALUE, BPF_PSEUDO_MAP_IDX_VALUE):
            return f"{dst} = env.direct_value(MAPS[{insn.index}], {insn.imm2})"
        if insn.src in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_IDX):
            return f"{dst} = env.map_handle(MAPS[{insn.index}])"
        reason = f"ld_imm64 with src={insn.src} is not modelled by the simulator"
        return f"raise ProgramFault({reason!r})"

    def _jump(self, insn: Instruction, start: int, in_loop: bool) -> list[str]:
        nxt = insn.index + 1
        if insn.op == BPF_EXIT:
            return ["env.budget = bud", "return r0"]
        if insn.op == BPF_CALL:
            args = "(env, r1, r2, r3, r4, r5)"
            if insn.code & BPF_X:
                helper = f"r0 = helpers[r{insn.dst}]{args} & {M64}"
            elif insn.src == BPF_PSEUDO_CALL:
                helper = f"r0 = f{nxt + insn.imm}{args}"
            else:
                helper = f"r0 = helpers[{insn.imm}]{args} & {M64}"
            return ["env.budget = bud", helper, "bud = env.budget"]  # callbacks spend budget
        target = nxt + insn.jump_offset
        if insn.op == BPF_JA:
            return [self._goto(target, start, in_loop)]
        return [f"if {_condition(insn)}:", "    " + self._goto(target, start, in_loop)]


def _stack_base(insn: Instruction) -> int | None:
    """The base register of a plain load or store (None for anything else)."""
    if insn.cls == BPF_LDX:
        return insn.src
    if insn.cls == BPF_ST or (insn.cls == BPF_STX and insn.code & 0xE0 != BPF_ATOMIC):
        return insn.dst
    return None


def _reads(insn: Instruction) -> set[int]:
    """The registers an instruction reads as values (a superset is fine)."""
    if insn.cls in (BPF_ALU, BPF_ALU64):
        read = {insn.dst}
        return read | {insn.src} if insn.code & BPF_X else read
    if insn.cls == BPF_STX:
        return {insn.dst, insn.src}
    if insn.cls in (BPF_JMP, BPF_JMP32):
        if insn.op == BPF_CALL:
            return {1, 2, 3, 4, 5} | ({insn.dst} if insn.code & BPF_X else set())
        if insn.op == BPF_EXIT:
            return {0}
        return {insn.dst, insn.src}
    if insn.cls == BPF_LD and not insn.is_ld_imm64:
        return {6, insn.src}
    return set()


def _alu(insn: Instruction) -> str:
    wide = insn.cls == BPF_ALU64
    d, op = f"r{insn.dst}", insn.op
    if op == BPF_END:
        if wide or insn.code & BPF_TO_BE:
            return f"{d} = byte_swap({d}, {insn.imm})"
        return f"{d} &= {(1 << insn.imm) - 1:#x}" if insn.imm < 64 else "pass"
    mask = M64 if wide else M32
    bits = 64 if wide else 32
    if insn.code & BPF_X:
        s = f"r{insn.src}"
        s_val = s if wide else f"({s} & {M32})"
        shift = f"({s} & {bits - 1})"
    else:
        imm = insn.imm & ((1 << bits) - 1)
        s = s_val = f"{imm:#x}"
        shift = str(insn.imm & (bits - 1))
    d_val = d if wide else f"({d} & {M32})"
    if op in (BPF_ADD, BPF_SUB, BPF_MUL):
        sign = {BPF_ADD: "+", BPF_SUB: "-", BPF_MUL: "*"}[op]
        return f"{d} = ({d} {sign} {s}) & {mask}"
    if op in (BPF_OR, BPF_XOR):
        sign = "|" if op == BPF_OR else "^"
        return f"{d} = {d} {sign} {s_val}" if wide else f"{d} = ({d} {sign} {s}) & {M32}"
    if op == BPF_AND:
        return f"{d} &= {s_val}"
    if op == BPF_LSH:
        return f"{d} = ({d} << {shift}) & {mask}"
    if op == BPF_RSH:
        return f"{d} = {d_val} >> {shift}"
    if op == BPF_ARSH:
        sign = S64 if wide else S32
        return f"{d} = ((({d_val} ^ {sign}) - {sign}) >> {shift}) & {mask}"
    if op == BPF_NEG:
        return f"{d} = -{d} & {mask}"
    if op == BPF_MOV:
        if insn.off and insn.code & BPF_X:
            top = 1 << (insn.off - 1)
            return f"{d} = ((({s} & {(1 << insn.off) - 1:#x}) ^ {top:#x}) - {top:#x}) & {mask}"
        return f"{d} = {s_val}"
    if op in (BPF_DIV, BPF_MOD):
        name = ("sdiv" if op == BPF_DIV else "smod") if insn.off else None
        if name:
            return f"{d} = {name}({d}, {s}, {bits})"
        if op == BPF_DIV:
            return f"{d} = {d_val} // {s_val} if {s_val} else 0"
        return f"{d} = {d_val} % {s_val} if {s_val} else {d_val}"
    raise AssertionError(f"unchecked ALU op {op:#x}")


_COMPARE: Final = {
    BPF_JEQ: "==", BPF_JNE: "!=", BPF_JGT: ">", BPF_JGE: ">=", BPF_JLT: "<", BPF_JLE: "<=",
    BPF_JSGT: ">", BPF_JSGE: ">=", BPF_JSLT: "<", BPF_JSLE: "<=",
}  # fmt: skip
_SIGNED: Final = frozenset({BPF_JSGT, BPF_JSGE, BPF_JSLT, BPF_JSLE})


def _condition(insn: Instruction) -> str:
    wide = insn.cls == BPF_JMP
    bits = 64 if wide else 32
    mask = (1 << bits) - 1
    a = f"r{insn.dst}" if wide else f"(r{insn.dst} & {M32})"
    if insn.code & BPF_X:
        b = f"r{insn.src}" if wide else f"(r{insn.src} & {M32})"
    else:
        b = f"{insn.imm & mask:#x}"
    if insn.op == BPF_JSET:
        return f"{a} & {b}"
    if insn.op in _SIGNED:
        sign = 1 << (bits - 1)
        a = f"({a} ^ {sign:#x})"
        b = f"({b} ^ {sign:#x})" if insn.code & BPF_X else f"{(insn.imm & mask) ^ sign:#x}"
    return f"{a} {_COMPARE[insn.op]} {b}"


def budget_exhausted(env: RunEnv, pcs: tuple[int, ...], remaining: int) -> None:
    """Raise BudgetExceeded for the first instruction of `pcs` beyond the `remaining` ones."""
    raise _budget_error(pcs[remaining])


def _budget_error(pc: int) -> BudgetExceeded:
    return BudgetExceeded(pc, "", "the instruction budget is exhausted")


class CompiledProgram:
    """The generated functions of one program (`functions[start]`, `main`)."""

    def __init__(self, exe: Executable) -> None:
        self.exe = exe
        self.filename = f"<bpf {exe.name or 'prog'} #{next(_serial)}>"
        writers = [FunctionWriter(exe, function) for function in exe.decoded.functions]
        lines = [line for writer in writers for line in writer.source()]
        self.source = "\n".join(line.text for line in lines) + "\n"
        self.line_pcs = [-1] + [line.pc for line in lines]
        namespace: dict[str, Any] = {
            "ProgramFault": ProgramFault,
            "TailCall": TailCall,
            "MAPS": exe.maps,
            "EXE": exe,
            "atomic": atomic,
            "ld_abs": ld_abs,
            "byte_swap": semantics.byte_swap,
            "sdiv": semantics.sdiv,
            "smod": semantics.smod,
            "budget_exhausted": budget_exhausted,
            "__name__": "kernelsim.prog.interpreter.generated",
        }
        code = compile(self.source, self.filename, "exec")
        exec(code, namespace)
        linecache.cache[self.filename] = (
            len(self.source), None, self.source.splitlines(True), self.filename
        )  # fmt: skip
        self.functions: dict[int, Callable[..., int]] = {
            f.start: namespace[f"f{f.start}"] for f in exe.decoded.functions
        }
        self.main = self.functions[0]
        _LOCATORS[self.filename] = self

    def run(self, env: RunEnv, r1: int, r2: int) -> int:
        """Run the main function; errors become BpfRuntimeError naming the instruction."""
        try:
            return self.main(env, r1, r2, 0, 0, 0)
        except (ProgramExit, BpfRuntimeError) as done:
            if isinstance(done, BudgetExceeded) and not done.text:
                raise _locate_budget(done, self) from None
            raise
        except Exception as error:
            raise _locate(error, self) from None


def _innermost(error: BaseException) -> tuple[CompiledProgram, int] | None:
    tb: types.TracebackType | None = error.__traceback__
    found = None
    while tb is not None:
        program = _LOCATORS.get(tb.tb_frame.f_code.co_filename)
        if program is not None:
            found = program, program.line_pcs[tb.tb_lineno]
        tb = tb.tb_next
    return found


def _locate(error: Exception, fallback: CompiledProgram) -> BpfRuntimeError:
    where = _innermost(error)
    program, pc = where if where is not None else (fallback, -1)
    if isinstance(error, ProgramFault):
        reason = error.reason
    elif isinstance(error, RecursionError):
        reason = "too many nested calls for the Python stack"
    else:
        reason = f"internal error of the simulator: {type(error).__name__}: {error}"
    return BpfRuntimeError(pc, program.exe.decoded.text(pc), reason)


def _locate_budget(error: BudgetExceeded, fallback: CompiledProgram) -> BudgetExceeded:
    where = _innermost(error)
    program = where[0] if where is not None else fallback
    return BudgetExceeded(error.index, program.exe.decoded.text(error.index), error.reason)


def compile_program(exe: Executable) -> CompiledProgram:
    return CompiledProgram(exe)
