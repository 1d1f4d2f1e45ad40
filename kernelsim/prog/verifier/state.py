"""The verifier state of one path: call frames (registers and stack each), held references.

A `State` is a stack of `Frame`s, the kernel's bpf_verifier_state with its bpf_func_state per
frame: frame 0 is the main program, each bpf-to-bpf call pushes a frame (`call`: r1-r5 are
copied into the callee, r0-r5 of the caller become unreadable, the callee's r10 points to its
own stack) and its exit pops it (`ret`: r0 is handed back, r6-r9 of the caller were never
touched). References (`refs`) belong to the whole state, as in the kernel since 6.13.

A frame's stack is MAX_BPF_STACK bytes below its r10, each byte INVALID (never written), MISC
(written, unknown), ZERO (written zero) or SPILL (part of a spilled register, kept per 8-byte
slot as a `Reg`). Byte `off` (-512..-1) lives in slot `(-off - 1) // 8` at index
`(-off - 1) % 8`, the kernel's layout, so the printed slot text ("fp-8=0000????") reads as the
kernel's does. A stack pointer names its frame (`Reg.frameno`): a callee may read and write its
callers' stacks through pointers passed as arguments.

`equivalent` is the kernel's states_equal for pruning (same frames and call sites, every frame
covered; see docs/fidelity/prog.md for what is compared more strictly than the kernel does);
`identical` is its exact comparison (infinite loop detection).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final

from kernelsim.prog.verifier.regs import Reg, RegType, fmt_reg

MAX_BPF_STACK: Final = 512
SLOTS: Final = MAX_BPF_STACK // 8
FP: Final = 10
ARG_REGS: Final = range(1, 6)
CALLER_SAVED: Final = range(6)


class Slot(enum.IntEnum):
    INVALID = 0
    SPILL = 1
    MISC = 2
    ZERO = 3


SLOT_CHAR: Final = {Slot.INVALID: "?", Slot.SPILL: "r", Slot.MISC: "m", Slot.ZERO: "0"}


class StoredState:
    """A state kept at a prune point (the kernel's bpf_verifier_state_list entry): `branches`
    counts the paths from it still being explored, `hit`/`miss` how often it pruned or failed
    to (states that keep missing are dropped, as the kernel drops them)."""

    __slots__ = ("branches", "dropped", "history", "hit", "miss", "parent", "state")

    def __init__(self, state: State, parent: StoredState | None, history: list[int]) -> None:
        self.state = state
        self.branches = 1
        self.parent = parent
        self.history = history
        """The instructions executed from the parent's state to this one."""
        self.hit = 0
        self.miss = 0
        self.dropped = False


class Frame:
    """One function's registers and stack (the kernel's bpf_func_state)."""

    __slots__ = ("allocated", "callsite", "frameno", "regs", "spills", "subprog", "types")

    def __init__(self, frameno: int = 0, callsite: int = -1, subprog: int = 0) -> None:
        self.frameno = frameno
        self.callsite = callsite
        """The call instruction that made this frame (-1 for the main program)."""
        self.subprog = subprog
        self.regs = [Reg() for _ in range(11)]
        self.regs[FP].mark_pointer(RegType.STACK, frameno=frameno)
        self.types = bytearray(MAX_BPF_STACK)
        """Per stack byte, index -off-1 (so index 0 is fp-1)."""
        self.spills: dict[int, Reg] = {}
        self.allocated = 0

    def copy(self) -> Frame:
        new = Frame.__new__(Frame)
        new.frameno, new.callsite, new.subprog = self.frameno, self.callsite, self.subprog
        new.regs = [r.copy() for r in self.regs]
        new.types = bytearray(self.types)
        new.spills = {k: v.copy() for k, v in self.spills.items()}
        new.allocated = self.allocated
        return new

    # -- stack slots ----------------------------------------------------------------------------
    def slot_type(self, spi: int, j: int) -> Slot:
        return Slot(self.types[spi * 8 + j])

    def byte_type(self, off: int) -> Slot:
        return Slot(self.types[-off - 1])

    def set_byte(self, off: int, kind: Slot) -> None:
        self.types[-off - 1] = kind

    def is_spilled(self, spi: int) -> bool:
        return self.types[spi * 8 + 7] == Slot.SPILL

    def scrub_spill(self, spi: int) -> None:
        """Turn a spilled slot's bytes into MISC (a partial overwrite)."""
        if self.is_spilled(spi) or any(self.types[spi * 8 + j] == Slot.SPILL for j in range(8)):
            for j in range(8):
                if self.types[spi * 8 + j] == Slot.SPILL:
                    self.types[spi * 8 + j] = Slot.MISC
            self.spills.pop(spi, None)

    def grow(self, off: int) -> None:
        need = -off
        need = (need + 7) // 8 * 8
        self.allocated = max(self.allocated, need)

    # -- printing (print_verifier_state) --------------------------------------------------------
    def text(self, regs: set[int] | None, slots: set[int] | None) -> str:
        """ " frame1: R1=ctx() R10=fp0 fp-8=..." for the given registers/slots (None: all)."""
        parts: list[str] = [f" frame{self.frameno}:"] if self.frameno else []
        for i, reg in enumerate(self.regs):
            if reg.type is RegType.NOT_INIT or (regs is not None and i not in regs):
                continue
            parts.append(f" R{i}={fmt_reg(reg, self.frameno)}")
        for spi in range(self.allocated // 8):
            if slots is not None and spi not in slots:
                continue
            chars = [self.slot_type(spi, j) for j in range(8)]
            if all(c == Slot.INVALID for c in chars):
                continue
            text = "".join(SLOT_CHAR[c] for c in chars)
            if chars[7] == Slot.SPILL and spi in self.spills:
                first = next(j for j in range(8) if chars[j] == Slot.SPILL)
                text = text[:first] + fmt_reg(self.spills[spi], self.frameno)
            parts.append(f" fp{-(spi + 1) * 8}={text}")
        return "".join(parts)

    # -- comparisons ----------------------------------------------------------------------------
    def equivalent(
        self, cur: Frame, live: int, precise: int, allow_uninit_stack: bool, idmap: IdMap
    ) -> bool:
        """func_states_equal: every live register and written stack byte of this (old) frame
        covers `cur`'s; scalars in registers outside `precise` only need to be scalars."""
        for i in range(11):
            if live >> i & 1 and not _regsafe(
                self.regs[i], cur.regs[i], idmap, bool(precise >> i & 1)
            ):
                return False
        for index in range(self.allocated):
            old_t = self.types[index]
            if old_t == Slot.INVALID or (allow_uninit_stack and old_t == Slot.MISC):
                continue
            if index >= cur.allocated or old_t != cur.types[index]:
                return False
            if index % 8 == 7 and old_t == Slot.SPILL:
                spi = index // 8
                old_r, cur_r = self.spills.get(spi), cur.spills.get(spi)
                if old_r is None or cur_r is None or not _regsafe(old_r, cur_r, idmap, True):
                    return False
        return True

    def identical(self, cur: Frame, idmap: IdMap) -> bool:
        for old, new in zip(self.regs, cur.regs, strict=True):
            if not _reg_identical(old, new, idmap):
                return False
        if self.callsite != cur.callsite or self.types != cur.types:
            return False
        if self.spills.keys() != cur.spills.keys():
            return False
        return all(
            _reg_identical(self.spills[k], cur.spills[k], idmap) for k in sorted(self.spills)
        )


class State:
    """One path's state (mutable; `copy` at branches)."""

    __slots__ = ("frames", "history", "parent", "refs")

    def __init__(self) -> None:
        self.frames = [Frame()]
        self.refs: list[tuple[int, int]] = []
        """Acquired references: (id, insn index)."""
        self.parent: StoredState | None = None
        self.history: list[int] = []
        """The instructions executed since the parent state (for precision backtracking)."""

    def copy(self) -> State:
        new = State.__new__(State)
        new.frames = [f.copy() for f in self.frames]
        new.refs = list(self.refs)
        new.parent = self.parent
        new.history = list(self.history)
        return new

    @property
    def cur(self) -> Frame:
        """The frame being executed."""
        return self.frames[-1]

    @property
    def regs(self) -> list[Reg]:
        return self.frames[-1].regs

    @property
    def curframe(self) -> int:
        return len(self.frames) - 1

    def frame_of(self, reg: Reg) -> Frame:
        """The frame whose stack a stack pointer points into."""
        return self.frames[reg.frameno]

    def all_regs(self) -> list[Reg]:
        """Registers and spilled registers of every frame (bpf_for_each_reg_in_vstate)."""
        regs: list[Reg] = []
        for frame in self.frames:
            regs += frame.regs
            regs += frame.spills.values()
        return regs

    # -- calls ----------------------------------------------------------------------------------
    def call(self, callsite: int, subprog: int) -> Frame:
        """Enter a subprogram (setup_func_entry + clear_caller_saved_regs); returns the callee."""
        caller = self.cur
        callee = Frame(len(self.frames), callsite, subprog)
        for regno in ARG_REGS:
            callee.regs[regno].assign(caller.regs[regno])
        for regno in CALLER_SAVED:
            caller.regs[regno].mark_not_init()
        self.frames.append(callee)
        return callee

    def ret(self) -> int:
        """Leave a subprogram: the caller gets r0; returns the call site."""
        callee = self.frames.pop()
        self.cur.regs[0].assign(callee.regs[0])
        return callee.callsite

    # -- printing -------------------------------------------------------------------------------
    def text(self, frameno: int, regs: set[int] | None, slots: set[int] | None) -> str:
        """print_verifier_state of frame `frameno` (the held references follow)."""
        text = self.frames[frameno].text(regs, slots)
        if self.refs:
            text += " refs=" + ",".join(str(ref_id) for ref_id, _ in self.refs)
        return text

    # -- pruning (states_equal) -----------------------------------------------------------------
    def equivalent(
        self,
        cur: State,
        live: Sequence[int],
        precise: Sequence[int],
        allow_uninit_stack: bool,
    ) -> bool:
        """Whether `cur` (at the same instruction) is covered by this explored state; `live`
        and `precise` give, per frame, the live registers and those compared exactly."""
        if len(self.frames) != len(cur.frames) or len(self.refs) != len(cur.refs):
            return False
        idmap = IdMap()
        if not all(idmap.same(a, b) for (a, _), (b, _) in zip(self.refs, cur.refs, strict=True)):
            return False
        for old, new, mask, exact in zip(self.frames, cur.frames, live, precise, strict=True):
            if old.callsite != new.callsite:
                return False
            if not old.equivalent(new, mask, exact, allow_uninit_stack, idmap):
                return False
        return True

    def identical(self, cur: State) -> bool:
        """Exact equality up to a renaming of ids (infinite loop detection). The current
        frames are compared first: they differ in most cases (states_maybe_looping)."""
        if len(self.frames) != len(cur.frames) or len(self.refs) != len(cur.refs):
            return False
        idmap = IdMap()
        if not self.frames[-1].identical(cur.frames[-1], idmap):
            return False
        if not all(idmap.same(a, b) for (a, _), (b, _) in zip(self.refs, cur.refs, strict=True)):
            return False
        return all(
            a.identical(b, idmap) for a, b in zip(self.frames[:-1], cur.frames[:-1], strict=True)
        )


_EXACT_FIELDS: Final = tuple(n for n in Reg.__slots__ if n not in ("id", "ref_obj_id", "precise"))


class IdMap:
    """The kernel's bpf_idmap: ids of the old state map one to one onto the current one's."""

    __slots__ = ("cur_to_old", "old_to_cur", "tmp")

    def __init__(self) -> None:
        self.old_to_cur: dict[int, int] = {}
        self.cur_to_old: dict[int, int] = {}
        self.tmp = 1 << 40

    def same(self, old: int, cur: int) -> bool:
        """check_ids: both zero, or a consistent pair."""
        if bool(old) != bool(cur):
            return False
        if not old:
            return True
        seen_cur, seen_old = self.old_to_cur.get(old), self.cur_to_old.get(cur)
        if seen_cur is None and seen_old is None:
            self.old_to_cur[old], self.cur_to_old[cur] = cur, old
            return True
        return seen_cur == cur and seen_old == old

    def same_scalar(self, old: int, cur: int) -> bool:
        """check_scalar_ids: an unlinked scalar (id 0) gets an id of its own."""
        if not old:
            self.tmp += 1
            old = self.tmp
        if not cur:
            self.tmp += 1
            cur = self.tmp
        return self.same(old, cur)


def _reg_identical(a: Reg, b: Reg, idmap: IdMap) -> bool:
    """regs_exact: every field equal, ids equal up to renaming."""
    if a.type is not b.type or a.var_off != b.var_off:
        return False
    if a.type is RegType.NOT_INIT:
        return True  # an unset register has every field at its default
    return (
        all(getattr(a, n) == getattr(b, n) for n in _EXACT_FIELDS)
        and idmap.same(a.id, b.id)
        and idmap.same(a.ref_obj_id, b.ref_obj_id)
    )


def _regsafe(old: Reg, cur: Reg, idmap: IdMap, precise: bool) -> bool:
    if old.type is RegType.NOT_INIT:
        return True
    if cur.type is RegType.NOT_INIT or old.type is not cur.type:
        return False
    if old.maybe_null != cur.maybe_null:
        return False
    if old.is_scalar:
        if not precise:
            return True
        return old.range_within(cur) and idmap.same_scalar(old.id, cur.id)
    if old.off != cur.off or old.map is not cur.map or old.mem_size != cur.mem_size:
        return False
    if old.type is RegType.STACK and old.frameno != cur.frameno:
        return False
    if old.type.is_packet and old.range > cur.range:
        return False
    if not old.range_within(cur):
        return False
    return idmap.same(old.id, cur.id)
