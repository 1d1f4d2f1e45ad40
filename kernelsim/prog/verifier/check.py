"""The abstract interpreter (the kernel's do_check): every path, every instruction.

Theory of operation
-------------------
A `Checker` walks the program depth first from insn 0 with a `State`. At a conditional jump
whose outcome is not decided by the registers, the jump target is pushed (with the log
position) and the fall-through continues; at exit (or when pruned) the next pushed state is
popped, and at log level 1 the log is cut back to where that branch was pushed, so only the
failing path remains. At prune points the current state is compared with the states kept
there (`State.equivalent`); a covered state ends its path ("N: safe"), and states are kept
with the kernel's heuristic (at least 2 jumps and 8 instructions since the last one kept).
Each instruction is checked in the kernel's order and the first refusal raises
`VerifierError` with the kernel's message. The trace is printed as do_check prints it: the
instruction, then (before the next one) the registers it touched after a ';' aligned at
column 40, or the whole state after a jump.

A bpf-to-bpf call pushes a frame onto the state (module `state`) and continues at the callee's
first instruction, logging "caller:" and "callee:" with both frames; the callee's exit pops it
and continues after the call site ("returning from callee:", "to caller at N:"). Every frame's
state is printed with its " frameN:" prefix, and a pointer into another frame's stack as
"fp[N]-8". Loops (back-edges, allowed for bpf_capable loaders) are explored iteration by
iteration, as the kernel does: a state at a prune point that equals, exactly, one kept there
on the same path is an infinite loop; otherwise the 1M processed-instruction limit ends a
loop that does not terminate soon enough. Kept states that keep failing to prune are dropped
(the kernel's miss/hit heuristic), which bounds the comparisons per instruction.
"""

from __future__ import annotations

import enum
import errno
import functools
from collections.abc import Sequence
from typing import Final

import attrs

from bpfsys.abi import (
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_CMPXCHG,
    BPF_DW,
    BPF_EXIT,
    BPF_FETCH,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_LD,
    BPF_LDX,
    BPF_MEM,
    BPF_MEMSX,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_ST,
    BPF_STX,
    BPF_X,
    BPF_XCHG,
    AttachType,
    BpfFunc,
    MapType,
    ProgType,
)
from bpfsys.asm import Insn
from bpfsys.kversion import KernelVersion
from kernelsim.maps.base import BpfMap
from kernelsim.prog.verifier import branches, const_str, scalar
from kernelsim.prog.verifier.context import ctx_access
from kernelsim.prog.verifier.disasm import ALU_OP_TEXT, helper_name, insn_text
from kernelsim.prog.verifier.errors import VerifierError
from kernelsim.prog.verifier.helpers import (
    MAP_FUNCS,
    MAP_ONLY_FUNCS,
    PACKET_WRITERS,
    PROTOS,
    Arg,
    Proto,
    Ret,
    allowed_helpers,
)
from kernelsim.prog.verifier.log import VerifierLog
from kernelsim.prog.verifier.precision import backtrack
from kernelsim.prog.verifier.regs import BPF_MAX_VAR_OFF, S64_MIN, Reg, RegType
from kernelsim.prog.verifier.state import FP, MAX_BPF_STACK, Frame, Slot, State, StoredState
from kernelsim.prog.verifier.structure import MapRef, callee, jump_target
from kernelsim.prog.verifier.subprogs import MAX_CALL_FRAMES, Subprog, subprog_at
from kernelsim.prog.verifier.tnum import U32

COMPLEXITY_LIMIT: Final = 1_000_000
NEWEST: Final = KernelVersion(6, 18)


@functools.cache
def helper_id_limit(version: KernelVersion) -> int:
    """__BPF_FUNC_MAX_ID of `version` (212 since 6.2): ids at or above it are "invalid func"."""
    return max(int(f) for f in BpfFunc if f.since <= version) + 1


SIZES: Final = {0x00: 4, 0x08: 2, 0x10: 1, 0x18: 8}
BPF_MAX_VAR_SIZ: Final = 1 << 29
MAX_PACKET_OFF: Final = 0xFFFF
FLOW_KEYS_SIZE: Final = 56
"""sizeof(struct bpf_flow_keys)."""
READ_ONLY_PACKET_TYPES: Final = frozenset({ProgType.CGROUP_SKB, ProgType.FLOW_DISSECTOR})
"""Program types with direct packet reads but no writes (may_access_direct_pkt_data)."""
READ, WRITE = False, True


@attrs.frozen
class Caps:
    """What the loader may do, as the verifier sees it."""

    bpf_capable: bool
    perfmon: bool

    @property
    def allow_ptr_leaks(self) -> bool:
        return self.perfmon


@attrs.frozen
class Program:
    """What the verifier checks: instructions, type, resolved map loads, pre-pass results."""

    insns: Sequence[Insn]
    prog_type: ProgType
    attach_type: int
    gpl: bool
    map_refs: dict[int, MapRef]
    prune_points: frozenset[int]
    force_checkpoints: frozenset[int]
    live: list[int]
    precise: list[int]
    """Per instruction: registers whose exact scalar value may still matter."""
    subprogs: Sequence[Subprog]
    array_lookup_nonnull: bool = True
    helper_limit: int = 212
    """__BPF_FUNC_MAX_ID of the kernel version: `helper_id_limit`."""
    version: KernelVersion = NEWEST
    """The kernel version (which helpers the base set has)."""


@attrs.define
class Stats:
    insn_processed: int = 0
    total_states: int = 0
    peak_states: int = 0
    max_states_per_insn: int = 0
    stack_depth: list[int] = attrs.Factory(lambda: [0])
    """Per subprogram: the deepest stack byte used (-off)."""
    max_ctx_offset: int = 0


class _Next(enum.Enum):
    """What follows an instruction: the next one, another path, or the caller's code."""

    GO_ON = "go on"
    PATH_DONE = "path done"
    RETURNED = "returned"


@attrs.define
class _Pending:
    state: State
    insn: int
    prev: int
    log_pos: int


class Checker:
    """One run of do_check over `program` (see the module docstring)."""

    def __init__(self, program: Program, caps: Caps, log: VerifierLog) -> None:
        self.p = program
        self.caps = caps
        self.log = log
        self.stats = Stats(stack_depth=[0] * len(program.subprogs))
        self.allowed = allowed_helpers(
            program.prog_type, caps.bpf_capable, caps.perfmon, program.version
        )
        self.explored: dict[int, list[StoredState]] = {}
        self.alive_states = 0
        """Kept states, and dropped ones still on a path being explored (peak_states)."""
        self.stack: list[_Pending] = []
        self.id_gen = 0
        self.jmps = 0
        self.prev_jmps = 0
        self.prev_insns = 0
        self.scratched_regs: set[int] = set()
        self.scratched_slots: set[int] = set()
        self.prev_log_pos = 0
        self.prev_insn_print_pos = 0
        self.state = State()
        self.idx = 0
        self.trace = log.trace
        """Whether the instruction trace is logged (level 1 or 2)."""
        self.level2 = log.level2

    # -- log helpers ----------------------------------------------------------------------------
    def verbose(self, text: str) -> None:
        self.log.write(text)

    def scratch_all(self) -> None:
        self.scratched_regs = set(range(11))
        self.scratched_slots = set(range(MAX_BPF_STACK // 8))

    def print_insn_state(self) -> None:
        if self.prev_log_pos and self.prev_log_pos == self.log.end_pos:
            self.log.reset(self.prev_log_pos - 1)
            width = max(self.prev_insn_print_pos + 4, 40)
            width = (width + 7) // 8 * 8 - self.prev_insn_print_pos - 1
            self.verbose(" " * width + ";")
        else:
            self.verbose(f"{self.idx}:")
        st = self.state
        self.verbose(st.text(st.curframe, self.scratched_regs, self.scratched_slots) + "\n")
        self.scratched_regs, self.scratched_slots = set(), set()

    def fail(self, err: int, message: str, trailer: str = "") -> VerifierError:
        return VerifierError(err, message, trailer)

    # -- registers ------------------------------------------------------------------------------
    def reg(self, regno: int) -> Reg:
        return self.state.regs[regno]

    def check_reg(self, regno: int, src: bool) -> Reg:
        """check_reg_arg: SRC_OP needs an initialised register; DST_OP may not be r10."""
        if regno >= 11:
            raise self.fail(errno.EINVAL, f"R{regno} is invalid")
        self.scratched_regs.add(regno)
        reg = self.state.regs[regno]
        if src:
            if reg.type is RegType.NOT_INIT:
                raise self.fail(errno.EACCES, f"R{regno} !read_ok")
        elif regno == FP:
            raise self.fail(errno.EACCES, "frame pointer is read only")
        return reg

    def is_pointer_value(self, reg: Reg) -> bool:
        return reg.is_pointer and not self.caps.allow_ptr_leaks

    def new_id(self) -> int:
        self.id_gen += 1
        return self.id_gen

    # -- main loop ------------------------------------------------------------------------------
    def run(self) -> None:
        self.state.regs[1].mark_pointer(RegType.CTX)
        self.scratch_all()
        print_state = False
        insns = self.p.insns
        while True:
            insn = insns[self.idx]
            self.stats.insn_processed += 1
            if self.stats.insn_processed > COMPLEXITY_LIMIT:
                raise self.fail(
                    errno.E2BIG,
                    f"BPF program is too large. Processed {self.stats.insn_processed} insn",
                )
            if self.idx in self.p.prune_points and self.visit_state():
                if self.trace:
                    if print_state and self.level2:
                        self.verbose(f"\nfrom {self.prev_idx} to {self.idx}: safe\n")
                    else:
                        self.verbose(f"{self.idx}: safe\n")
                if not self.next_path():
                    return
                print_state = True
                continue
            if self.level2 and print_state:
                self.verbose(f"\nfrom {self.prev_idx} to {self.idx}:")
                self.verbose(self.state.text(self.state.curframe, None, None) + "\n")
                print_state = False
            if self.trace:
                if self.scratched_regs or self.scratched_slots:
                    self.print_insn_state()
                self.prev_log_pos = self.log.end_pos
                self.verbose(f"{self.idx}: {self.insn_text(self.idx)}\n")
                self.prev_insn_print_pos = self.log.end_pos - self.prev_log_pos
                self.prev_log_pos = self.log.end_pos
            self.prev_idx = self.idx
            self.state.history.append(self.idx)
            outcome = self.step(insn)
            if outcome is _Next.PATH_DONE:
                if not self.next_path():
                    return
                print_state = True
            elif outcome is _Next.RETURNED:
                print_state = True

    prev_idx = 0

    def insn_text(self, idx: int) -> str:
        ref = self.p.map_refs.get(idx)
        imm64 = None
        insn = self.p.insns[idx]
        if insn.code == BPF_LD | BPF_DW:
            nxt = self.p.insns[idx + 1] if idx + 1 < len(self.p.insns) else insn
            imm64 = ((nxt.imm & U32) << 32) | (insn.imm & U32)
            if ref is not None:
                addr = 0xFFFF888100000000 + ref.map.id * 0x1000 + (ref.value_off or 0)
                imm64 = addr if self.caps.allow_ptr_leaks else 0
        return insn_text(insn, imm64)

    def next_path(self) -> bool:
        """Finish the current path; continue with a pushed one (False: all done)."""
        self.scratch_all()
        self.update_branches(self.state.parent)
        if not self.stack:
            return False
        pending = self.stack.pop()
        if not self.level2:
            self.log.reset(pending.log_pos)
        self.state, self.idx, self.prev_idx = pending.state, pending.insn, pending.prev
        return True

    def update_branches(self, node: StoredState | None) -> None:
        """A path ended: its kept states have one branch fewer; dropped ones without branches
        are gone (they no longer count as alive)."""
        while node is not None:
            node.branches -= 1
            if node.branches:
                break
            if node.dropped:
                self.alive_states -= 1
            node = node.parent

    def push(self, target: int) -> State:
        other = self.state.copy()
        self.stack.append(_Pending(other, target, self.idx, self.log.end_pos))
        if other.parent is not None:
            other.parent.branches += 1
        if len(self.stack) > 8192:
            raise self.fail(errno.E2BIG, "The sequence of 8193 jumps is too complex.")
        return other

    def visit_state(self) -> bool:
        """is_state_visited: True when the current state is covered (prune)."""
        idx, cur, stats = self.idx, self.state, self.stats
        force = idx in self.p.force_checkpoints
        add = force or (
            self.jmps - self.prev_jmps >= 2 and stats.insn_processed - self.prev_insns >= 8
        )
        kept = self.explored.setdefault(idx, [])
        live: list[int] = []
        precise: list[int] = []
        for stored in list(kept):
            if stored.branches:
                if stored.state.identical(cur):
                    raise self.fail(
                        errno.EINVAL,
                        f"infinite loop detected at insn {idx}",
                        f"cur state:{cur.text(cur.curframe, None, None)}\n"
                        f"old state:{stored.state.text(cur.curframe, None, None)}\n",
                    )
                if (
                    not force
                    and self.jmps - self.prev_jmps < 20
                    and stats.insn_processed - self.prev_insns < 100
                ):
                    add = False
            else:
                if not live:
                    points = [f.callsite for f in cur.frames[1:]] + [idx]
                    live = [self.p.live[i] for i in points]
                    precise = [self.p.precise[i] for i in points]
                if stored.state.equivalent(cur, live, precise, self.caps.allow_ptr_leaks):
                    stored.hit += 1
                    return True
            if add:
                stored.miss += 1
            patience = 64 if force and stored.branches else 3
            if stored.miss > stored.hit * patience + patience:
                kept.remove(stored)
                stored.dropped = True
                if not stored.branches:
                    self.alive_states -= 1
        stats.max_states_per_insn = max(stats.max_states_per_insn, len(kept))
        if not add:
            return False
        stats.total_states += 1
        self.alive_states += 1
        stats.peak_states = max(stats.peak_states, self.alive_states)
        self.prev_jmps = self.jmps
        self.prev_insns = stats.insn_processed
        stored = StoredState(cur.copy(), cur.parent, cur.history)
        kept.append(stored)
        cur.parent, cur.history = stored, []
        return False

    # -- one instruction ------------------------------------------------------------------------
    def step(self, insn: Insn) -> _Next:
        """Check and apply one instruction."""
        cls = insn.code & 0x07
        if cls in (BPF_ALU, BPF_ALU64):
            self.check_alu(insn)
        elif cls == BPF_LDX:
            self.check_reg(insn.src, True)
            self.check_reg(insn.dst, False)
            size = SIZES[insn.code & 0x18]
            self.check_mem_access(insn.src, insn.off, size, READ, insn.dst,
                                  signed=insn.code & 0xE0 == BPF_MEMSX)  # fmt: skip
        elif cls == BPF_STX:
            if insn.code & 0xE0 == BPF_ATOMIC:
                self.check_atomic(insn)
            else:
                if insn.code & 0xE0 != BPF_MEM or insn.imm:
                    raise self.fail(errno.EINVAL, "BPF_STX uses reserved fields")
                self.check_reg(insn.src, True)
                self.check_reg(insn.dst, True)
                self.check_mem_access(insn.dst, insn.off, SIZES[insn.code & 0x18], WRITE, insn.src)
        elif cls == BPF_ST:
            if insn.code & 0xE0 != BPF_MEM or insn.src:
                raise self.fail(errno.EINVAL, "BPF_ST uses reserved fields")
            self.check_reg(insn.dst, True)
            self.check_mem_access(insn.dst, insn.off, SIZES[insn.code & 0x18], WRITE, -1,
                                  imm=insn.imm)  # fmt: skip
        elif cls in (BPF_JMP, BPF_JMP32):
            return self.check_jmp(insn)
        elif cls == BPF_LD:
            mode = insn.code & 0xE0
            if mode in (0x20, 0x40):
                self.check_ld_abs(insn)
            elif mode == 0:
                self.check_ld_imm(insn)
                self.idx += 1
            else:
                raise self.fail(errno.EINVAL, "invalid BPF_LD mode")
        self.idx += 1
        return _Next.GO_ON

    # -- ALU ------------------------------------------------------------------------------------
    def check_alu(self, insn: Insn) -> None:
        op, alu64, use_x = insn.code & 0xF0, insn.code & 0x07 == BPF_ALU64, bool(insn.code & BPF_X)
        bits = 64 if alu64 else 32
        if op in (scalar.END, scalar.NEG):
            if op == scalar.NEG:
                if use_x or insn.src or insn.off or insn.imm:
                    raise self.fail(errno.EINVAL, "BPF_NEG uses reserved fields")
            elif insn.src or insn.off or insn.imm not in (16, 32, 64) or (alu64 and use_x):
                raise self.fail(errno.EINVAL, "BPF_END uses reserved fields")
            dst = self.check_reg(insn.dst, True)
            if self.is_pointer_value(dst):
                raise self.fail(errno.EACCES, f"R{insn.dst} pointer arithmetic prohibited")
            self.check_reg(insn.dst, False)
            if not dst.is_scalar:
                dst.mark_unknown()
            elif op == scalar.NEG:
                scalar.alu(dst, scalar.NEG, dst, bits)
            else:
                scalar.byte_swap(dst, insn.imm, bool(insn.code & 0x08), alu64)
            return
        if op == scalar.MOV:
            self.check_mov(insn, alu64, use_x)
            return
        if op > scalar.END:
            raise self.fail(errno.EINVAL, f"invalid BPF_ALU opcode {op:x}")
        sdivmod_ok = insn.off == 0 or (insn.off == 1 and op in (scalar.DIV, scalar.MOD))
        if use_x:
            if insn.imm or not sdivmod_ok:
                raise self.fail(errno.EINVAL, "BPF_ALU uses reserved fields")
            self.check_reg(insn.src, True)
        elif insn.src or not sdivmod_ok:
            raise self.fail(errno.EINVAL, "BPF_ALU uses reserved fields")
        self.check_reg(insn.dst, True)
        if op in (scalar.DIV, scalar.MOD) and not use_x and insn.imm == 0:
            raise self.fail(errno.EINVAL, "div by zero")
        if op in (scalar.LSH, scalar.RSH, scalar.ARSH) and not use_x and not 0 <= insn.imm < bits:
            raise self.fail(errno.EINVAL, f"invalid shift {insn.imm}")
        self.check_reg(insn.dst, False)
        dst = self.reg(insn.dst)
        imm = insn.imm if alu64 else insn.imm & U32
        src = self.reg(insn.src) if use_x else Reg.known(imm)
        if src.is_pointer and dst.is_pointer:
            if op == scalar.SUB and self.caps.allow_ptr_leaks:
                dst.mark_unknown()
                return
            raise self.fail(
                errno.EACCES, f"R{insn.dst} pointer {ALU_OP_TEXT[op]} pointer prohibited"
            )
        if src.is_pointer:
            self.ptr_alu(insn, op, alu64, src, dst)
        elif dst.is_pointer:
            self.ptr_alu(insn, op, alu64, dst, src)
        else:
            scalar.alu(dst, op, src, bits)

    def check_mov(self, insn: Insn, alu64: bool, use_x: bool) -> None:
        allowed_off = (0, 8, 16, 32) if alu64 else (0, 8, 16)
        if use_x and alu64 and insn.off == 1:
            if insn.imm not in (1, 1 << 16):
                raise self.fail(
                    errno.EINVAL,
                    "addr_space_cast insn can only convert between address space 1 and 0",
                )
            raise self.fail(errno.EINVAL, "addr_space_cast needs an arena (not modelled)")
        if use_x:
            if insn.off not in allowed_off or insn.imm:
                raise self.fail(errno.EINVAL, "BPF_MOV uses reserved fields")
            self.check_reg(insn.src, True)
        elif insn.src or insn.off:
            raise self.fail(errno.EINVAL, "BPF_MOV uses reserved fields")
        self.check_reg(insn.dst, False)
        dst = self.reg(insn.dst)
        if not use_x:
            dst.mark_known(insn.imm if alu64 else insn.imm & U32)
            return
        src = self.reg(insn.src)
        if insn.off:
            if self.is_pointer_value(src):
                raise self.fail(errno.EACCES, f"R{insn.src} sign-extension part of pointer")
            value = src.copy()
            if not value.is_scalar:
                value.mark_unknown()
            scalar.sign_extend(value, insn.off, 64 if alu64 else 32)
            dst.assign(value)
            return
        if alu64:
            if src.is_scalar and not src.id and not src.var_off.is_const():
                src.id = self.new_id()
            dst.assign(src)
            return
        if src.is_pointer:
            if self.is_pointer_value(src):
                raise self.fail(errno.EACCES, f"R{insn.src} partial copy of pointer")
            dst.mark_unknown()
            dst.zext_32_to_64()
            return
        no_sext = src.umax <= U32
        if no_sext and not src.id and not src.var_off.is_const():
            src.id = self.new_id()
        value = src.copy()
        if not no_sext:
            value.id = 0
        value.coerce_to_size(4)
        dst.assign(value)

    def ptr_alu(self, insn: Insn, op: int, alu64: bool, ptr: Reg, off_reg: Reg) -> None:
        """adjust_ptr_min_max_vals: dst = ptr <op> off_reg."""
        dst_no = insn.dst
        known = off_reg.var_off.is_const()
        if not alu64:
            if op == scalar.SUB and self.caps.allow_ptr_leaks:
                self.reg(dst_no).mark_unknown()
                return
            raise self.fail(errno.EACCES, f"R{dst_no} 32-bit pointer arithmetic prohibited")
        if ptr.maybe_null:
            raise self.fail(
                errno.EACCES,
                f"R{dst_no} pointer arithmetic on {ptr.type_str()} prohibited, null-check it first",
            )
        okay = (RegType.CTX, RegType.MAP_VALUE, RegType.MAP_KEY, RegType.STACK,
                RegType.PACKET_META, RegType.PACKET, RegType.MEM, RegType.RINGBUF_MEM)  # fmt: skip
        if (
            ptr.type not in okay
            and not (
                ptr.type is RegType.MAP_PTR and known and off_reg.smin == 0 and op == scalar.ADD
            )
            and not (ptr.type is RegType.FLOW_KEYS and known)
        ):
            raise self.fail(
                errno.EACCES, f"R{dst_no} pointer arithmetic on {ptr.type_str()} prohibited"
            )
        if op in (scalar.AND, scalar.OR, scalar.XOR):
            raise self.fail(
                errno.EACCES, f"R{dst_no} bitwise operator {ALU_OP_TEXT[op]} on pointer prohibited"
            )
        if op not in (scalar.ADD, scalar.SUB):
            raise self.fail(
                errno.EACCES,
                f"R{dst_no} pointer arithmetic with {ALU_OP_TEXT[op]} operator prohibited",
            )
        self.check_sane_offset(off_reg, ptr.type_str(), known)
        self.check_sane_offset(ptr, ptr.type_str(), False)
        result = ptr.copy()
        smin = off_reg.smin
        if op == scalar.SUB:
            if off_reg is self.reg(dst_no) and ptr is not off_reg:
                raise self.fail(errno.EACCES, f"R{dst_no} tried to subtract pointer from scalar")
            if ptr.type is RegType.STACK:
                raise self.fail(
                    errno.EACCES, f"R{dst_no} subtraction from stack pointer prohibited"
                )
        if known and -(1 << 31) <= ptr.off + (smin if op == scalar.ADD else -smin) < 1 << 31:
            result.off = ptr.off + (smin if op == scalar.ADD else -smin)
        else:
            var = ptr.copy()
            var.type = RegType.SCALAR
            scalar.alu(var, op, off_reg, 64)
            result.var_off = var.var_off
            result.umin, result.umax, result.smin, result.smax = (
                var.umin,
                var.umax,
                var.smin,
                var.smax,
            )
            if ptr.type.is_packet:
                result.id = self.new_id()
                result.range = 0
        result.reset_32_from_64_unknown()
        self.check_sane_offset(result, ptr.type_str(), False)
        result.sync_bounds()
        self.reg(dst_no).assign(result)

    def check_sane_offset(self, reg: Reg, type_str: str, known: bool) -> None:
        value = reg.smin
        if known and (value >= BPF_MAX_VAR_OFF or value <= -BPF_MAX_VAR_OFF):
            raise self.fail(
                errno.EACCES, f"math between {type_str} pointer and {value} is not allowed"
            )
        if reg.off >= BPF_MAX_VAR_OFF or reg.off <= -BPF_MAX_VAR_OFF:
            raise self.fail(errno.EACCES, f"{type_str} pointer offset {reg.off} is not allowed")
        if reg.smin == S64_MIN:
            raise self.fail(
                errno.EACCES,
                f"math between {type_str} pointer and register with unbounded min value is not allowed",
            )
        if value >= BPF_MAX_VAR_OFF or value <= -BPF_MAX_VAR_OFF:
            raise self.fail(
                errno.EACCES, f"value {value} makes {type_str} pointer be out of bounds"
            )

    # -- loads of immediates and packets --------------------------------------------------------
    def check_ld_imm(self, insn: Insn) -> None:
        if insn.code & 0x18 != BPF_DW:
            raise self.fail(errno.EINVAL, "invalid BPF_LD_IMM insn")
        if insn.off:
            raise self.fail(errno.EINVAL, "BPF_LD_IMM64 uses reserved fields")
        dst = self.check_reg(insn.dst, False)
        if insn.src == BPF_PSEUDO_FUNC:
            raise self.fail(errno.EINVAL, "missing btf func_info")
        ref = self.p.map_refs.get(self.idx)
        if ref is None:
            nxt = self.p.insns[self.idx + 1]
            dst.mark_known(((nxt.imm & U32) << 32) | (insn.imm & U32))
        elif ref.value_off is None:
            dst.mark_pointer(RegType.MAP_PTR, map=ref.map)
        else:
            dst.mark_pointer(RegType.MAP_VALUE, map=ref.map, off=ref.value_off)

    def check_ld_abs(self, insn: Insn) -> None:
        if self.p.prog_type not in (ProgType.SOCKET_FILTER, ProgType.SCHED_CLS, ProgType.SCHED_ACT):
            raise self.fail(
                errno.EINVAL, "BPF_LD_[ABS|IND] instructions not allowed for this program type"
            )
        mode = insn.code & 0xE0
        if insn.dst or insn.off or insn.code & 0x18 == BPF_DW or (mode == 0x20 and insn.src):
            raise self.fail(errno.EINVAL, "BPF_LD_[ABS|IND] uses reserved fields")
        ctx = self.check_reg(6, True)
        if self.state.refs:
            raise self.fail(errno.EINVAL, "BPF_LD_[ABS|IND] cannot be mixed with socket references")
        if ctx.type is not RegType.CTX:
            raise self.fail(errno.EINVAL, "at the time of BPF_LD_ABS|IND R6 != pointer to skb")
        if mode == 0x40:
            self.check_reg(insn.src, True)
        self.check_ptr_off(ctx, 6)
        for regno in range(6):
            self.reg(regno).mark_not_init()
            self.scratched_regs.add(regno)
        self.reg(0).mark_unknown()

    # -- memory ---------------------------------------------------------------------------------
    def check_ptr_off(self, reg: Reg, regno: int, fixed_off_ok: bool = False) -> None:
        if reg.off < 0:
            raise self.fail(
                errno.EACCES,
                f"negative offset {reg.type_str()} ptr R{regno} off={reg.off} disallowed",
            )
        if not fixed_off_ok and reg.off:
            raise self.fail(
                errno.EACCES,
                f"dereference of modified {reg.type_str()} ptr R{regno} off={reg.off} disallowed",
            )
        if not reg.var_off.is_const() or reg.var_off.value:
            raise self.fail(
                errno.EACCES, f"variable {reg.type_str()} access var_off={reg.var_off} disallowed"
            )

    def check_mem_access(
        self, regno: int, off: int, size: int, write: bool, value_regno: int,
        *, signed: bool = False, imm: int | None = None,
    ) -> None:  # fmt: skip
        reg = self.reg(regno)
        value = self.reg(value_regno) if value_regno >= 0 else None
        if reg.type is RegType.STACK:
            self.check_alignment(reg, off, size)
            self.stack_access(regno, reg, off, size, write, value_regno, imm, signed)
            return
        if reg.maybe_null or reg.type not in (
            RegType.CTX, RegType.MAP_VALUE, RegType.PACKET, RegType.PACKET_META,
            RegType.MEM, RegType.RINGBUF_MEM, RegType.FLOW_KEYS,
        ):  # fmt: skip
            raise self.fail(errno.EACCES, f"R{regno} invalid mem access '{reg.type_str()}'")
        if write and value is not None and self.is_pointer_value(value):
            where = {RegType.CTX: "ctx", RegType.MAP_VALUE: "map",
                     RegType.FLOW_KEYS: "flow keys"}.get(reg.type, "mem")  # fmt: skip
            raise self.fail(errno.EACCES, f"R{value_regno} leaks addr into {where}")
        result: RegType = RegType.SCALAR
        if reg.type is RegType.CTX:
            result = self.ctx_access(regno, reg, off, size, write)
        elif reg.type is RegType.MAP_VALUE:
            self.region_access(
                regno, reg, off + reg.off, size, reg.map.value_size if reg.map else 0
            )
        elif reg.type.is_packet:
            self.packet_access(regno, reg, off + reg.off, size, write)
        elif reg.type is RegType.FLOW_KEYS:
            self.flow_keys_access(off + reg.off, size)
        else:
            self.region_access(regno, reg, off + reg.off, size, reg.mem_size)
        if not write and value_regno >= 0:
            dst = self.reg(value_regno)
            if result is RegType.SCALAR:
                dst.mark_unknown()
                self.narrow_load(dst, size, signed)
            else:
                dst.mark_pointer(result)

    @staticmethod
    def narrow_load(dst: Reg, size: int, signed: bool) -> None:
        if signed:
            scalar.sign_extend(dst, size * 8, 64)
        else:
            dst.coerce_to_size(size)

    def check_alignment(self, reg: Reg, off: int, size: int) -> None:
        total = reg.var_off.add(reg.var_off.const(reg.off + off))
        if not total.is_aligned(size):
            raise self.fail(
                errno.EACCES,
                f"misaligned stack access off {_tnum_text(reg)}+{reg.off}+{off} size {size}",
            )

    def ctx_access(self, regno: int, reg: Reg, off: int, size: int, write: bool) -> RegType:
        self.check_ptr_off(reg, regno)
        off += reg.off
        result = ctx_access(self.p.prog_type, self.p.attach_type, off, size, write,
                            self.caps.bpf_capable)  # fmt: skip
        if result is None:
            raise self.fail(errno.EACCES, f"invalid bpf_context access off={off} size={size}")
        self.stats.max_ctx_offset = max(self.stats.max_ctx_offset, off + size)
        return result

    def mem_error(self, regno: int, reg: Reg, off: int, size: int, mem_size: int) -> str:
        if reg.type is RegType.MAP_VALUE:
            return f"invalid access to map value, value_size={mem_size} off={off} size={size}"
        if reg.type.is_packet:
            return (
                f"invalid access to packet, off={off} size={size}, "
                f"R{regno}(id={reg.id},off={off},r={mem_size})"
            )
        return f"invalid access to memory, mem_size={mem_size} off={off} size={size}"

    def region_access(self, regno: int, reg: Reg, off: int, size: int, mem_size: int) -> None:
        """check_mem_region_access: the variable part's whole range must stay inside."""
        if reg.smin < 0 and (
            reg.smin == S64_MIN or not -(1 << 31) <= off + reg.smin < 1 << 31 or reg.smin + off < 0
        ):
            raise self.fail(
                errno.EACCES,
                f"R{regno} min value is negative, either use unsigned index or do a if (index >=0) check.",
            )
        lo = reg.smin + off
        if not (lo >= 0 and size > 0 and lo + size <= mem_size):
            self.verbose(self.mem_error(regno, reg, lo, size, mem_size) + "\n")
            raise self.fail(
                errno.EACCES, f"R{regno} min value is outside of the allowed memory range"
            )
        if reg.umax >= BPF_MAX_VAR_OFF:
            raise self.fail(
                errno.EACCES,
                f"R{regno} unbounded memory access, make sure to bounds check any such access",
            )
        hi = reg.umax + off
        if not (hi >= 0 and hi + size <= mem_size):
            self.verbose(self.mem_error(regno, reg, hi, size, mem_size) + "\n")
            raise self.fail(
                errno.EACCES, f"R{regno} max value is outside of the allowed memory range"
            )

    def flow_keys_access(self, off: int, size: int) -> None:
        """check_flow_keys_access: within struct bpf_flow_keys (56 bytes)."""
        if off < 0 or size < 0 or off + size > FLOW_KEYS_SIZE:
            raise self.fail(errno.EACCES, f"invalid access to flow keys off={off} size={size}")

    def packet_access(self, regno: int, reg: Reg, off: int, size: int, write: bool) -> None:
        if write and self.p.prog_type in READ_ONLY_PACKET_TYPES:
            raise self.fail(errno.EACCES, "cannot write into packet")
        if reg.smin < 0:
            raise self.fail(
                errno.EACCES,
                f"R{regno} min value is negative, either use unsigned index or do a if (index >=0) check.",
            )
        if not (off >= 0 and size > 0 and off + size <= reg.range):
            self.verbose(self.mem_error(regno, reg, off, size, reg.range) + "\n")
            raise self.fail(errno.EACCES, f"R{regno} offset is outside of the packet")

    # -- the stack ------------------------------------------------------------------------------
    def stack_bounds(
        self, regno: int, reg: Reg, off: int, size: int, write: bool
    ) -> tuple[int, int]:
        """check_stack_access_within_bounds; returns (min_off, max_off)."""
        extra = " write to" if write else " read from"
        if reg.var_off.is_const():
            lo = reg.var_off.value - (1 << 64 if reg.var_off.value >> 63 else 0) + off
            hi = lo + size
        else:
            if reg.smax >= BPF_MAX_VAR_OFF or reg.smin <= -BPF_MAX_VAR_OFF:
                raise self.fail(
                    errno.EACCES, f"invalid unbounded variable-offset{extra} stack R{regno}"
                )
            lo, hi = reg.smin + off, reg.smax + off + size
        frame = self.state.frame_of(reg)
        floor = -MAX_BPF_STACK if write or self.caps.perfmon else -frame.allocated
        err = None
        if lo < floor or lo > -1:
            err = errno.EACCES
        elif hi > 0:
            err = errno.EINVAL
        if err is not None:
            if reg.var_off.is_const():
                raise self.fail(err, f"invalid{extra} stack R{regno} off={off} size={size}")
            raise self.fail(
                err,
                f"invalid variable-offset{extra} stack R{regno} var_off={reg.var_off} off={off} size={size}",
            )
        frame.grow(lo)
        depths = self.stats.stack_depth
        depths[frame.subprog] = max(depths[frame.subprog], frame.allocated)
        return lo, hi

    def stack_access(
        self, regno: int, reg: Reg, off: int, size: int, write: bool, value_regno: int,
        imm: int | None, signed: bool,
    ) -> None:  # fmt: skip
        off += reg.off
        lo, hi = self.stack_bounds(regno, reg, off, size, write)
        st = self.state.frame_of(reg)
        if not reg.var_off.is_const():
            self.stack_var_access(st, lo, hi, write, value_regno)
            return
        spi = (-lo - 1) // 8
        self.scratched_slots.add(spi)
        if write:
            self.stack_write(st, lo, size, value_regno, imm)
        else:
            self.stack_read(st, lo, size, value_regno, signed)

    def stack_var_access(self, st: Frame, lo: int, hi: int, write: bool, value_regno: int) -> None:
        for at in range(lo, hi):
            st.scrub_spill((-at - 1) // 8) if write else None
            if write:
                if st.byte_type(at) != Slot.ZERO:
                    st.set_byte(at, Slot.MISC)
            elif st.byte_type(at) == Slot.INVALID and not self.caps.perfmon:
                raise self.fail(
                    errno.EACCES, f"invalid variable-offset read from stack R{value_regno}"
                )
        if not write and value_regno >= 0:
            self.reg(value_regno).mark_unknown()

    def stack_write(
        self, st: Frame, off: int, size: int, value_regno: int, imm: int | None
    ) -> None:
        spi = (-off - 1) // 8
        value = self.reg(value_regno) if value_regno >= 0 else None
        aligned = off % 8 == 0
        if value is not None and value.is_pointer and size != 8:
            raise self.fail(errno.EACCES, "invalid size of register spill")
        if value is not None and value.type is RegType.STACK and st is not self.state.cur:
            raise self.fail(
                errno.EINVAL, "cannot spill pointers to stack into stack frame of the caller"
            )
        spill: Reg | None = None
        if (
            value is not None
            and aligned
            and (value.is_pointer or (value.is_scalar and self.caps.bpf_capable))
        ):
            fits = value.umax.bit_length() <= 8 * size
            if value.is_scalar and fits and not value.id and not value.var_off.is_const():
                value.id = self.new_id()  # the fill will be linked to the spilled register
            spill = value.copy()
        elif value is None and aligned and imm is not None and self.caps.bpf_capable:
            spill = Reg.known(imm if size == 8 else imm & ((1 << (size * 8)) - 1))
        if spill is not None and (size == 8 or spill.is_scalar):
            st.scrub_spill(spi)
            for j in range(8 - size, 8):
                st.types[spi * 8 + j] = Slot.SPILL
            for j in range(8 - size):
                if st.types[spi * 8 + j] == Slot.SPILL:
                    st.types[spi * 8 + j] = Slot.MISC
            if size < 8:
                spill.coerce_to_size(size)
            st.spills[spi] = spill
            return
        st.scrub_spill(spi)
        zero = (value is not None and value.is_const and value.const == 0) or (
            value is None and imm == 0
        )
        for at in range(off, off + size):
            st.set_byte(at, Slot.ZERO if zero else Slot.MISC)

    def stack_read(self, st: Frame, off: int, size: int, value_regno: int, signed: bool) -> None:
        spi = (-off - 1) // 8
        if st.is_spilled(spi) and spi in st.spills:
            spilled = st.spills[spi]
            spill_size = sum(1 for j in range(8) if st.slot_type(spi, j) == Slot.SPILL)
            if size != 8:
                if not spilled.is_scalar:
                    raise self.fail(errno.EACCES, "invalid size of register fill")
                if value_regno < 0:
                    return
                dst = self.reg(value_regno)
                if size <= spill_size and off % 8 == 0:
                    dst.assign(spilled)
                    self.narrow_load(dst, size, signed)
                else:
                    self.check_stack_bytes(st, off, size)
                    dst.mark_unknown()
                    self.narrow_load(dst, size, signed)
                return
            for j in range(8):
                if st.slot_type(spi, j) != Slot.SPILL:
                    raise self.fail(errno.EACCES, "corrupted spill memory")
            if value_regno >= 0:
                self.reg(value_regno).assign(spilled)
            return
        zeros = self.check_stack_bytes(st, off, size)
        if value_regno >= 0:
            dst = self.reg(value_regno)
            if zeros == size:
                dst.mark_known(0)
            else:
                dst.mark_unknown()
                self.narrow_load(dst, size, signed)

    def check_stack_bytes(self, st: Frame, off: int, size: int) -> int:
        """Every byte read must have been written (unless uninitialised reads are allowed);
        returns how many are known zero."""
        zeros = 0
        for i in range(size):
            kind = st.byte_type(off + i)
            if kind == Slot.ZERO:
                zeros += 1
            elif kind == Slot.INVALID and not self.caps.perfmon:
                raise self.fail(errno.EACCES, f"invalid read from stack off {off}+{i} size {size}")
        return zeros

    def check_atomic(self, insn: Insn) -> None:
        ops = {0x00, 0x40, 0x50, 0xA0}
        if insn.imm not in ops | {op | BPF_FETCH for op in ops} | {BPF_XCHG, BPF_CMPXCHG}:
            raise self.fail(
                errno.EINVAL, f"BPF_ATOMIC uses invalid atomic opcode {insn.imm & 0xFF:02x}"
            )
        size = SIZES[insn.code & 0x18]
        if size not in (4, 8):
            raise self.fail(errno.EINVAL, "invalid atomic operand size")
        self.check_reg(insn.src, True)
        self.check_reg(insn.dst, True)
        if insn.imm == BPF_CMPXCHG:
            self.check_reg(0, True)
            if self.is_pointer_value(self.reg(0)):
                raise self.fail(errno.EACCES, "R0 leaks addr into mem")
        if self.is_pointer_value(self.reg(insn.src)):
            raise self.fail(errno.EACCES, f"R{insn.src} leaks addr into mem")
        dst = self.reg(insn.dst)
        if dst.type in (RegType.CTX, RegType.PACKET, RegType.PACKET_META, RegType.SOCK_COMMON,
                        RegType.SOCKET, RegType.FLOW_KEYS):  # fmt: skip
            raise self.fail(
                errno.EACCES, f"BPF_ATOMIC stores into R{insn.dst} {dst.type_str()} is not allowed"
            )
        load = (0 if insn.imm == BPF_CMPXCHG else insn.src) if insn.imm & BPF_FETCH else -1
        self.check_mem_access(insn.dst, insn.off, size, READ, -1)
        if load >= 0:
            self.check_mem_access(insn.dst, insn.off, size, READ, load)
            self.scratched_regs.add(load)
        self.check_mem_access(insn.dst, insn.off, size, WRITE, -1)

    # -- jumps, calls, exit ---------------------------------------------------------------------
    def check_jmp(self, insn: Insn) -> _Next:
        cls, op = insn.code & 0x07, insn.code & 0xF0
        self.jmps += 1
        if op == 0x80:
            if (insn.code & BPF_X or insn.off or insn.src not in (0, 1, 2) or insn.dst
                    or cls == BPF_JMP32):  # fmt: skip
                raise self.fail(errno.EINVAL, "BPF_CALL uses reserved fields")
            if insn.src == BPF_PSEUDO_CALL:
                self.call_subprog(insn)
            else:
                self.check_call(insn)
                self.idx += 1
            return _Next.GO_ON
        if op == BPF_JA:
            if (insn.code & BPF_X or insn.src or insn.dst
                    or (cls == BPF_JMP and insn.imm) or (cls == BPF_JMP32 and insn.off)):  # fmt: skip
                raise self.fail(errno.EINVAL, "BPF_JA uses reserved fields")
            self.idx = jump_target(self.idx, insn)
            return _Next.GO_ON
        if op == BPF_EXIT:
            if insn.code & BPF_X or insn.imm or insn.src or insn.dst or cls == BPF_JMP32:
                raise self.fail(errno.EINVAL, "BPF_EXIT uses reserved fields")
            if self.state.curframe:
                self.return_from_subprog()
                return _Next.RETURNED
            self.check_exit()
            return _Next.PATH_DONE
        self.check_cond_jmp(insn)
        return _Next.GO_ON

    def check_cond_jmp(self, insn: Insn) -> None:
        op, bits = insn.code & 0xF0, 32 if insn.code & 0x07 == BPF_JMP32 else 64
        if op > 0xD0:
            raise self.fail(errno.EINVAL, f"invalid BPF_JMP/JMP32 opcode {op:x}")
        dst = self.check_reg(insn.dst, True)
        if insn.code & BPF_X:
            if insn.imm:
                raise self.fail(errno.EINVAL, "BPF_JMP/JMP32 uses reserved fields")
            src = self.check_reg(insn.src, True)
            both_pkt = dst.type in (RegType.PACKET, RegType.PACKET_META, RegType.PACKET_END) and (
                src.type in (RegType.PACKET, RegType.PACKET_META, RegType.PACKET_END)
            )
            if not both_pkt and self.is_pointer_value(src):
                raise self.fail(errno.EACCES, f"R{insn.src} pointer comparison prohibited")
        else:
            if insn.src:
                raise self.fail(errno.EINVAL, "BPF_JMP/JMP32 uses reserved fields")
            src = Reg.known(insn.imm if bits == 64 else insn.imm & U32)
        pred = self.branch_taken(dst, src, op, bits)
        target = jump_target(self.idx, insn)
        if pred is not None:
            if dst.is_scalar:
                self.mark_precise(insn.dst)
            if insn.code & BPF_X and src.is_scalar:
                self.mark_precise(insn.src)
            if self.trace:
                self.print_insn_state()
            self.idx = target if pred else self.idx + 1
            return
        this = self.state
        other = self.push(target)
        o_dst = other.regs[insn.dst]
        o_src = other.regs[insn.src] if insn.code & BPF_X else src.copy()
        t_src = src if insn.code & BPF_X else src.copy()
        if dst.is_scalar and (t_src.is_scalar):
            branches.refine(o_dst, o_src, op, bits)
            branches.refine(dst, t_src, branches.NEGATE[op], bits)
            for regno, st in ((insn.dst, other), (insn.dst, this)):
                self.sync_linked(st, st.regs[regno])
            if insn.code & BPF_X:
                for st in (other, this):
                    self.sync_linked(st, st.regs[insn.src])
        if (
            bits == 64
            and not insn.code & BPF_X
            and insn.imm == 0
            and op in (0x10, 0x50)
            and dst.maybe_null
        ):
            ref_id = dst.id  # marking `this` first clears dst.id
            self.mark_ptr_or_null(this, ref_id, is_null=op == 0x50)
            self.mark_ptr_or_null(other, ref_id, is_null=op == 0x10)
        elif not self.match_pkt_pointers(op, insn, dst, src, this, other) and self.is_pointer_value(
            dst
        ):
            raise self.fail(errno.EACCES, f"R{insn.dst} pointer comparison prohibited")
        if self.trace:
            self.print_insn_state()
        self.idx += 1

    def mark_precise(self, regno: int) -> None:
        """mark_chain_precision: the kept states on this path learn which of their scalars
        decided this instruction (module `precision`)."""
        st = self.state
        frame = st.curframe
        regs, slots = {regno}, set[int]()
        history, node = st.history[:-1], st.parent
        while node is not None:
            for idx in reversed(history):
                if not backtrack(self.p.insns[idx], regs, slots):
                    return
            if not regs and not slots:
                return
            if node.state.curframe != frame:
                return
            kept = node.state.frames[frame]
            for r in list(regs):
                reg = kept.regs[r]
                if reg.is_scalar and not reg.precise:
                    reg.precise = True
                else:
                    regs.discard(r)
            for spi in list(slots):
                spilled = kept.spills.get(spi) if kept.is_spilled(spi) else None
                if spilled is not None and spilled.is_scalar and not spilled.precise:
                    spilled.precise = True
                else:
                    slots.discard(spi)
            history, node = node.history, node.parent

    def branch_taken(self, dst: Reg, src: Reg, op: int, bits: int) -> int | None:
        """is_branch_taken: 1 taken, 0 not taken, None unknown. A pointer known not to be
        NULL (reg_not_null: not ctx, stack or packet pointers) is unequal to zero."""
        if dst.is_scalar and src.is_scalar:
            return branches.branch_taken(dst, src, op, bits)
        ptr, value = (dst, src) if src.is_const else (src, dst)
        if (
            not value.is_const
            or value.const & ((1 << bits) - 1)
            or ptr.maybe_null
            or ptr.type not in _NOT_NULL_TYPES
            or op not in (0x10, 0x50)
        ):
            return None
        return 0 if op == 0x10 else 1

    @staticmethod
    def sync_linked(state: State, reg: Reg) -> None:
        if not reg.is_scalar or not reg.id:
            return
        for other in state.all_regs():
            if other is not reg and other.is_scalar and other.id == reg.id:
                other.assign(reg)

    def mark_ptr_or_null(self, state: State, ref_id: int, is_null: bool) -> None:
        for reg in state.all_regs():
            if reg.maybe_null and reg.id == ref_id:
                if is_null:
                    reg.mark_known(0)
                else:
                    reg.maybe_null = False
                    if reg.type is not RegType.RINGBUF_MEM:
                        reg.id = 0
        if is_null:
            state.refs = [r for r in state.refs if r[0] != ref_id]

    def match_pkt_pointers(
        self, op: int, insn: Insn, dst: Reg, src: Reg, this: State, other: State
    ) -> bool:
        if not insn.code & BPF_X or insn.code & 0x07 == BPF_JMP32:
            return False
        pkt, end = RegType.PACKET, RegType.PACKET_END
        if dst.type is pkt and src.type is end:
            ptr, forward = dst, True
        elif dst.type is end and src.type is pkt:
            ptr, forward = src, False
        else:
            return False
        # (side, right_open) where the packet pointer is known in bounds, by op and direction
        good = {
            (0x20, True): (this, False), (0x20, False): (other, True),
            (0xA0, True): (other, True), (0xA0, False): (this, False),
            (0x30, True): (this, True), (0x30, False): (other, False),
            (0xB0, True): (other, False), (0xB0, False): (this, True),
        }.get((op, forward))  # fmt: skip
        if good is None:
            return False
        side, right_open = good
        if ptr.umax > MAX_PACKET_OFF:
            return True
        new_range = ptr.off + (1 if right_open else 0)
        for reg in side.all_regs():
            if reg.type is ptr.type and reg.id == ptr.id:
                reg.range = max(reg.range, new_range)
        return True

    def check_exit(self) -> None:
        st = self.state
        if st.refs:
            for ref_id, at in st.refs:
                self.verbose(f"Unreleased reference id={ref_id} alloc_insn={at}\n")
            raise self.fail(
                errno.EINVAL, "BPF_EXIT instruction in main prog would lead to reference leak"
            )
        r0 = self.check_reg(0, True)
        if self.is_pointer_value(r0):
            raise self.fail(errno.EACCES, "R0 leaks addr as return value")
        if self.p.prog_type is ProgType.CGROUP_SKB:
            top = 3 if self.p.attach_type == AttachType.CGROUP_INET_EGRESS else 1
            if not r0.is_scalar:
                raise self.fail(
                    errno.EINVAL,
                    f"At program exit the register R0 is not a known value ({r0.type_str()})",
                )
            if r0.smin < 0 or r0.smax > top:
                text = "At program exit the register R0 has"
                if r0.smin > S64_MIN:
                    text += f" smin={r0.smin}"
                if r0.smax < (1 << 63) - 1:
                    text += f" smax={r0.smax}"
                if r0.smin == S64_MIN and r0.smax == (1 << 63) - 1:
                    text += " unknown scalar value"
                raise self.fail(errno.EINVAL, f"{text} should have been in [0, {top}]")

    # -- bpf-to-bpf calls -----------------------------------------------------------------------
    def call_subprog(self, insn: Insn) -> None:
        """check_func_call: a new frame for the callee, which runs next."""
        st = self.state
        if st.curframe + 1 >= MAX_CALL_FRAMES:
            raise self.fail(errno.E2BIG, f"the call stack of {st.curframe + 2} frames is too deep")
        target = callee(self.idx, insn)
        st.call(self.idx, subprog_at(self.p.subprogs, target))
        self.scratch_all()
        if self.trace:
            self.verbose("caller:\n" + st.text(st.curframe - 1, None, None) + "\n")
            self.verbose("callee:\n" + st.text(st.curframe, None, None) + "\n")
        self.idx = target

    def return_from_subprog(self) -> None:
        """prepare_func_exit: r0 goes back to the caller, which continues after the call."""
        st = self.state
        if st.regs[0].type is RegType.STACK:
            raise self.fail(errno.EINVAL, "cannot return stack pointer to the caller")
        frameno = st.curframe
        callee_text = st.text(frameno, None, None)
        self.idx = st.ret() + 1
        if self.trace:
            self.verbose(f"returning from callee:\n{callee_text}\n")
            self.verbose(f"to caller at {self.idx}:\n{st.text(frameno - 1, None, None)}\n")

    # -- helper calls ---------------------------------------------------------------------------
    def check_call(self, insn: Insn) -> None:
        if insn.src:
            raise self.fail(errno.EINVAL, "calling kernel functions is not supported")
        func = insn.imm
        if not 0 <= func < self.p.helper_limit:
            raise self.fail(errno.EINVAL, f"invalid func unknown#{func}")
        name = f"{helper_name(func)}#{func}"
        proto = PROTOS.get(func)
        if proto is None or func not in self.allowed:
            raise self.fail(errno.EINVAL, f"program of this type cannot use helper {name}")
        if proto.gpl_only and not self.p.gpl:
            raise self.fail(
                errno.EINVAL, "cannot call GPL-restricted function from non-GPL compatible program"
            )
        call = _Call(self, proto, func)
        call.check_args()
        if func == BpfFunc.SNPRINTF:
            const_str.check_snprintf_call(self, self.reg(3), self.reg(5))
        for regno in range(6):
            self.reg(regno).mark_not_init()
            self.scratched_regs.add(regno)
        r0 = self.reg(0)
        if proto.ret is Ret.INTEGER:
            r0.mark_unknown()
        elif proto.ret is Ret.MAP_VALUE_OR_NULL:
            assert call.map is not None
            r0.mark_pointer(RegType.MAP_VALUE, map=call.map)
            if not (self.p.array_lookup_nonnull and call.const_key_in_range()):
                r0.maybe_null = True
                r0.id = self.new_id()
        elif proto.ret is Ret.RINGBUF_MEM_OR_NULL:
            r0.mark_pointer(RegType.RINGBUF_MEM, maybe_null=True, mem_size=call.alloc_size)
            self.new_id()
            r0.id = r0.ref_obj_id = self.new_id()
            self.state.refs.append((r0.id, self.idx))
        if call.map is not None:
            self.check_map_func(call.map.map_type, func, name)
        if func in PACKET_WRITERS:
            for st_reg in self.state.all_regs():
                if st_reg.type in (RegType.PACKET, RegType.PACKET_META, RegType.PACKET_END):
                    st_reg.mark_unknown()

    def check_map_func(self, map_type: MapType, func: int, name: str) -> None:
        ok = MAP_ONLY_FUNCS.get(map_type)
        wanted = MAP_FUNCS.get(func)
        if (ok is not None and func not in ok) or (wanted is not None and map_type not in wanted):
            raise self.fail(errno.EINVAL, f"cannot pass map_type {int(map_type)} into func {name}")


_NOT_NULL_TYPES: Final = frozenset(
    {RegType.MAP_VALUE, RegType.MAP_KEY, RegType.MAP_PTR, RegType.SOCK_COMMON, RegType.SOCKET,
     RegType.MEM,
     RegType.RINGBUF_MEM}
)  # fmt: skip
_NULL_OK: Final = frozenset({Arg.MEM_OR_NULL, Arg.UNINIT_MEM_OR_NULL})
_WRITTEN_MEM: Final = frozenset({Arg.UNINIT_MEM, Arg.UNINIT_MEM_OR_NULL})
_MEM_TYPES: Final = "fp, pkt, pkt_meta, map_key, map_value, mem, ringbuf_mem, buf, trusted_ptr_"
_MEM_REG_TYPES: Final = (RegType.STACK, RegType.PACKET, RegType.PACKET_META, RegType.MAP_KEY,
                         RegType.MAP_VALUE, RegType.MEM, RegType.RINGBUF_MEM)  # fmt: skip


class _Call:
    """Argument checking of one helper call (check_func_arg for each argument)."""

    def __init__(self, checker: Checker, proto: Proto, func: int) -> None:
        self.c = checker
        self.proto = proto
        self.func = func
        self.map: BpfMap | None = None
        self.key_reg: Reg | None = None
        self.alloc_size = 0

    def const_key_in_range(self) -> bool:
        """Whether an array lookup's key is a constant on the stack within max_entries."""
        bpf_map = self.map
        key = self.key_reg
        if (
            bpf_map is None
            or key is None
            or bpf_map.map_type not in (MapType.ARRAY, MapType.PERCPU_ARRAY)
        ):
            return False
        if key.type is not RegType.STACK or not key.var_off.is_const():
            return False
        off = key.off + key.var_off.value - (1 << 64 if key.var_off.value >> 63 else 0)
        st = self.c.state.frame_of(key)
        spi = (-off - 1) // 8
        if off % 8 == 0 and st.is_spilled(spi) and spi in st.spills and st.spills[spi].is_const:
            value = st.spills[spi].const & ((1 << (bpf_map.key_size * 8)) - 1)
        elif all(st.byte_type(off + i) == Slot.ZERO for i in range(bpf_map.key_size)):
            value = 0
        else:
            return False
        return value < bpf_map.max_entries

    def type_error(self, regno: int, reg: Reg, expected: str) -> VerifierError:
        return self.c.fail(errno.EACCES, f"R{regno} type={reg.type_str()} expected={expected}")

    def check_args(self) -> None:
        args = self.proto.args
        for i, arg in enumerate(args):
            regno = i + 1
            reg = self.c.check_reg(regno, True)
            if arg is Arg.ANYTHING:
                if self.c.is_pointer_value(reg):
                    raise self.c.fail(errno.EACCES, f"R{regno} leaks addr into helper function")
                continue
            self.check_arg(regno, reg, arg, args)

    def check_arg(self, regno: int, reg: Reg, arg: Arg, args: tuple[Arg, ...]) -> None:
        c = self.c
        if arg is Arg.MAP_PTR:
            if reg.type is not RegType.MAP_PTR:
                raise self.type_error(regno, reg, "map_ptr")
            self.map = reg.map
        elif arg is Arg.CTX:
            if reg.type is not RegType.CTX:
                raise self.type_error(regno, reg, "ctx")
            c.check_ptr_off(reg, regno)
        elif arg in (Arg.SIZE, Arg.SIZE_OR_ZERO):
            if not reg.is_scalar:
                raise self.type_error(regno, reg, "scalar")
            self.check_size(regno, reg, arg is Arg.SIZE_OR_ZERO, args[regno - 2] in _WRITTEN_MEM)
        elif arg is Arg.ALLOC_SIZE_OR_ZERO:
            if not reg.is_scalar:
                raise self.type_error(regno, reg, "scalar")
            if not reg.var_off.is_const():
                raise c.fail(errno.EACCES, f"R{regno} is not a known constant'")
            self.alloc_size = reg.const
        elif arg is Arg.FUNC:
            raise self.type_error(regno, reg, "func")  # no register holds a function
        elif arg is Arg.STACK_OR_NULL:
            if reg.type is not RegType.STACK and not (reg.is_const and reg.const == 0):
                raise self.type_error(regno, reg, "fp")
        elif arg is Arg.CONST_STR:
            if reg.type is not RegType.MAP_VALUE or reg.maybe_null:
                raise self.type_error(regno, reg, "map_value")
            const_str.check_const_str(c, regno, reg)
        elif arg is Arg.RINGBUF_MEM:
            if reg.type is not RegType.RINGBUF_MEM or reg.maybe_null:
                raise self.type_error(regno, reg, "ringbuf_mem")
            if reg.off or not reg.var_off.is_const() or reg.var_off.value:
                c.check_ptr_off(reg, regno)
            c.state.refs = [r for r in c.state.refs if r[0] != reg.id]
            for other in c.state.all_regs():
                if other.type is RegType.RINGBUF_MEM and other.id == reg.id:
                    other.mark_unknown()
        else:
            self.check_mem_arg(regno, reg, arg)

    def check_mem_arg(self, regno: int, reg: Reg, arg: Arg) -> None:
        c = self.c
        if arg in _NULL_OK and reg.is_const and reg.const == 0:
            return
        if reg.type not in _MEM_REG_TYPES or reg.maybe_null:
            raise self.type_error(regno, reg, _MEM_TYPES)
        if arg in (Arg.MAP_KEY, Arg.MAP_VALUE, Arg.UNINIT_MAP_VALUE):
            if self.map is None:
                raise c.fail(
                    errno.EACCES,
                    f"invalid map_ptr to access map->{'key' if arg is Arg.MAP_KEY else 'value'}",
                )
            size = self.map.key_size if arg is Arg.MAP_KEY else self.map.value_size
            if arg is Arg.MAP_KEY:
                self.key_reg = reg.copy()
            self.mem_access(regno, reg, size, write=arg is Arg.UNINIT_MAP_VALUE, zero_ok=False)

    def check_size(self, regno: int, size_reg: Reg, zero_ok: bool, write: bool) -> None:
        c = self.c
        if size_reg.smin < 0:
            raise c.fail(
                errno.EACCES,
                f"R{regno} min value is negative, either use unsigned or 'var &= const'",
            )
        if size_reg.umin == 0 and not zero_ok:
            raise c.fail(
                errno.EACCES,
                f"R{regno} invalid zero-sized read: u64=[{size_reg.umin},{size_reg.umax}]",
            )
        if size_reg.umax >= BPF_MAX_VAR_SIZ:
            raise c.fail(
                errno.EACCES,
                f"R{regno} unbounded memory access, use 'var &= const' or 'if (var < const)'",
            )
        mem_regno = regno - 1
        mem = c.reg(mem_regno)
        if mem.is_const and mem.const == 0:
            if size_reg.umax:
                raise self.type_error(mem_regno, mem, "fp")
            return
        self.mem_access(mem_regno, mem, size_reg.umax, write=write, zero_ok=zero_ok)

    def mem_access(self, regno: int, reg: Reg, size: int, write: bool, zero_ok: bool) -> None:
        """check_helper_mem_access: `size` bytes at `reg` are readable (or writable)."""
        c = self.c
        if size == 0 and not zero_ok:
            raise c.fail(errno.EACCES, "invalid zero-sized read")
        if size == 0:
            return
        if reg.type is RegType.STACK:
            lo, hi = c.stack_bounds(regno, reg, reg.off, size, write)
            st = c.state.frame_of(reg)
            for at in range(lo, hi):
                spi = (-at - 1) // 8
                if write:
                    c.scratched_slots.add(spi)
                    if st.byte_type(at) == Slot.SPILL:
                        st.scrub_spill(spi)
                    st.set_byte(at, Slot.MISC)
                elif st.byte_type(at) == Slot.INVALID and not c.caps.perfmon:
                    raise c.fail(
                        errno.EACCES,
                        f"invalid indirect read from stack R{regno} off {lo}+{at - lo} size {size}",
                    )
            return
        if reg.type is RegType.MAP_VALUE:
            c.region_access(regno, reg, reg.off, size, reg.map.value_size if reg.map else 0)
        elif reg.type.is_packet:
            c.packet_access(regno, reg, reg.off, size, write)
        else:
            c.region_access(regno, reg, reg.off, size, reg.mem_size)


__all__ = ["Caps", "Checker", "Program", "Stats"]


def _tnum_text(reg: Reg) -> str:
    """A variable offset as the alignment message prints it (the value when known)."""
    return str(reg.var_off.value) if reg.var_off.is_const() else str(reg.var_off)
