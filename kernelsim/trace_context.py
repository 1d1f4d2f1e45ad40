"""What an event hands its programs and its samples: trace records, pt_regs, program contexts.

Theory of operation
-------------------
*Trace records* (`build_record`): the bytes a tracepoint writes, laid out by its format file:
the common fields (common_type = the event id, common_flags, common_preempt_count,
common_pid), then the event's fields, given as a dict by field name (ints; bytes or str for
char arrays and for `__data_loc` strings, which are appended after the fixed part with their
NUL and located by (length << 16 | offset)) or as raw bytes (everything after the common
fields). `record_size` is the size perf gives the record in a sample: the C struct
(its fields rounded up to their alignment) plus the dynamic data, padded so that the RAW size
word and the record end on 8 bytes (round_up(size + 4, 8) - 4), the padding zeroed.

Measured on 6.18 (syscalls/sys_enter_getpid and raw_syscalls/sys_enter samples): common_flags
0 and common_preempt_count 1 in syscall context; a syscall event's record is
{entry, int nr, unsigned long args[]} (20 + 8 * args bytes in the sample), its registers the
user registers of the syscall (samples say PERF_RECORD_MISC_USER), while other tracepoints give
kernel registers (MISC_KERNEL).

*Registers* (`pt_regs`): struct pt_regs of x86_64 (168 bytes) from a dict by register name
(``di`` or ``rdi``, ``ip``/``rip``, ...); cs defaults to the kernel's code segment (0x10) or,
for user registers, the user one (0x33, ss 0x2b); `user_mode` is (cs & 3) == 3.

*Program contexts* (`TracingContext`): the region r1 points to, read-only, every load checked
by the verifier's is_valid_access rule of the program type (kernelsim.prog.verifier.context):
tracepoint programs see the record (syscall events: the kernel's syscall_tp_t copy of 64
bytes), kprobe programs pt_regs, perf_event programs struct bpf_perf_event_data (pt_regs,
sample_period, addr), raw tracepoint programs the u64 arguments.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from typing import Final

from bpfsys.abi import ProgType
from kernelsim.perf.trace_event import COMMON_FIELDS, EventField, EventKind, TraceEventCall
from kernelsim.prog.interpreter.errors import ProgramFault
from kernelsim.prog.interpreter.memory import Region, RegionKind
from kernelsim.prog.verifier.context import ctx_access

PT_REGS: Final = (
    "r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si",
    "di", "orig_ax", "ip", "cs", "flags", "sp", "ss",
)  # fmt: skip
"""struct pt_regs (x86_64), in order, 8 bytes each."""
PT_REGS_SIZE: Final = 8 * len(PT_REGS)
KERNEL_CS: Final = 0x10
USER_CS: Final = 0x33
USER_SS: Final = 0x2B
SYSCALL_CTX_SIZE: Final = 64
"""sizeof(syscall_tp_t): entry, int nr, unsigned long args[6]."""
SYSCALL_COMMON_PREEMPT: Final = 1
_ARRAY = re.compile(r"\[(\d+)\]")
_U64 = struct.Struct("<Q")


# ---------------------------------------------------------------------------------------------
# Registers
# ---------------------------------------------------------------------------------------------
def _register_name(name: str) -> str:
    bare = name.lower().removeprefix("%")
    if bare not in PT_REGS and bare.startswith("r") and bare[1:] in PT_REGS:
        bare = bare[1:]
    if bare == "eflags":
        bare = "flags"
    if bare not in PT_REGS:
        raise ValueError(f"no register {name!r} in x86_64 pt_regs")
    return bare


def pt_regs(regs: Mapping[str, int] | None, *, user: bool) -> bytes:
    """struct pt_regs with `regs` set (others 0; cs/ss per `user` unless given)."""
    values = dict.fromkeys(PT_REGS, 0)
    values["cs"] = USER_CS if user else KERNEL_CS
    if user:
        values["ss"] = USER_SS
    for name, value in (regs or {}).items():
        values[_register_name(name)] = value & ((1 << 64) - 1)
    return b"".join(_U64.pack(values[name]) for name in PT_REGS)


def register(raw_regs: bytes, name: str) -> int:
    """The value of register `name` in a pt_regs image."""
    return int(_U64.unpack_from(raw_regs, 8 * PT_REGS.index(_register_name(name)))[0])


def user_mode(raw_regs: bytes) -> bool:
    return register(raw_regs, "cs") & 3 == 3


# ---------------------------------------------------------------------------------------------
# Trace records
# ---------------------------------------------------------------------------------------------
def _alignment(field: EventField) -> int:
    if "__data_loc" in field.decl:
        return 4
    match = _ARRAY.search(field.decl)
    element = field.size // int(match.group(1)) if match and int(match.group(1)) else field.size
    return element if element in (1, 2, 4, 8) else 8


def _encode_field(field: EventField, value: int | bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode("latin-1")
    if isinstance(value, bytes | bytearray):
        if len(value) > field.size:
            raise ValueError(f"{len(value)} bytes do not fit field {field.name} ({field.size})")
        return bytes(value).ljust(field.size, b"\0")
    if field.size not in (1, 2, 4, 8):
        raise ValueError(f"field {field.name} ({field.size} bytes) takes bytes, not a number")
    return (value & ((1 << (8 * field.size)) - 1)).to_bytes(field.size, "little")


def fixed_size(call: TraceEventCall) -> int:
    """sizeof the record's C struct without dynamic data (its fields rounded to alignment)."""
    end = call.record_size
    align = max([4, *(_alignment(f) for f in call.fields)])
    if call.kind is EventKind.SYSCALL:
        align = 8  # struct syscall_trace_enter/exit end in unsigned long members
    return -(-end // align) * align


def build_record(
    call: TraceEventCall,
    fields: Mapping[str, int | bytes | str] | bytes | None,
    *,
    pid: int,
    flags: int = 0,
    preempt_count: int = SYSCALL_COMMON_PREEMPT,
) -> bytes:
    """The record `call` writes for `fields` (module docstring), as the sample's RAW data."""
    end = call.record_size
    record = bytearray(struct.pack("<HBBi", call.id & 0xFFFF, flags, preempt_count, pid))
    if isinstance(fields, bytes | bytearray):
        record += fields
        record = record.ljust(end, b"\0")
        return _pad(record, fixed_size(call), len(record) - end)
    record = record.ljust(end, b"\0")
    dynamic = bytearray()
    by_name = {f.name: f for f in (*COMMON_FIELDS, *call.fields)}
    for name, value in (fields or {}).items():
        field = by_name.get(name)
        if field is None:
            raise ValueError(f"{call.system}/{call.name} has no field {name!r}")
        if "__data_loc" in field.decl:
            text = (value.encode("latin-1") if isinstance(value, str) else bytes(value)) + b"\0"
            value = len(text) << 16 | (end + len(dynamic))
            dynamic += text
        record[field.offset : field.offset + field.size] = _encode_field(field, value)
    return _pad(record + dynamic, fixed_size(call), len(dynamic))


def _pad(record: bytearray, struct_size: int, dynamic: int) -> bytes:
    """Zero-pad to the sample's RAW size: round_up(struct size + dynamic + 4, 8) - 4."""
    size = -(-(struct_size + dynamic + 4) // 8) * 8 - 4
    return bytes(record.ljust(size, b"\0"))


def syscall_context(record: bytes) -> bytearray:
    """syscall_tp_t: the entry (its first 8 bytes hold the regs pointer: zero here), the
    syscall number and the arguments (or the return value), 64 bytes."""
    ctx = bytearray(SYSCALL_CTX_SIZE)
    body = record[8:SYSCALL_CTX_SIZE]
    ctx[8 : 8 + len(body)] = body
    return ctx


def raw_tracepoint_args(args: Sequence[int]) -> bytearray:
    """The u64 argument array of a raw tracepoint (12 slots, the rest zero)."""
    if len(args) > 12:
        raise ValueError("a raw tracepoint has at most 12 arguments")
    return bytearray(b"".join(_U64.pack(a & ((1 << 64) - 1)) for a in args).ljust(96, b"\0"))


def perf_event_data(regs: bytes, sample_period: int, addr: int = 0) -> bytearray:
    """struct bpf_perf_event_data: pt_regs, sample_period, addr."""
    return bytearray(regs + _U64.pack(sample_period) + _U64.pack(addr))


# ---------------------------------------------------------------------------------------------
# Program contexts
# ---------------------------------------------------------------------------------------------
class TracingContext(Region):
    """A read-only context whose loads the program type's is_valid_access rule allows."""

    def __init__(self, prog_type: ProgType, buf: bytearray, name: str) -> None:
        super().__init__(RegionKind.CONTEXT, f"context ({name})", buf, writable=False)
        self.prog_type = prog_type

    def _allowed(self, off: int, size: int) -> None:
        if ctx_access(self.prog_type, 0, off, size, False, True) is None:
            raise ProgramFault(f"invalid bpf_context access off={off} size={size}")

    def load(self, off: int, size: int) -> int:
        self._allowed(off, size)
        return super().load(off, size)

    def read_bytes(self, off: int, size: int) -> bytes:
        self._allowed(off, size)
        return super().read_bytes(off, size)
