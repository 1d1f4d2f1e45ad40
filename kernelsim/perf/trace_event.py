"""Trace events: the tracepoints, syscall events and probe events that perf events attach to.

Theory of operation
-------------------
A `TraceEventCall` is the kernel's trace_event_call: an event with an id, a system (its tracefs
group) and a name, a record layout (`fields`, after the four common fields every record starts
with) and a print fmt. Its `kind` says what fires it and so which BPF program type may attach:
tracepoints and syscall events take BPF_PROG_TYPE_TRACEPOINT, kprobe and uprobe events take
BPF_PROG_TYPE_KPROBE. Programs attach to the event, not to one perf event: `programs` is the
kernel's tp_event->prog_array, shared by every perf event opened on it (at most
BPF_TRACE_MAX_PROGS entries, each program once: EEXIST, E2BIG). `format()` renders the tracefs
format file byte for byte as the kernel does; `fields_for_filter()` is what the ftrace filter
parser looks fields up in.

Syscall events follow one rule (kernel/trace/trace_syscalls.c): `__syscall_nr` (int) at offset
8, then one 8-byte slot per argument from offset 16, unsigned whatever the C type, and a print
fmt of "name: 0x%08lx" per argument; sys_exit events have `__syscall_nr` and `long ret` at 16.
"""

from __future__ import annotations

import enum
import errno
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import attrs

from kernelsim.errors import fail

if TYPE_CHECKING:
    from kernelsim.prog.program import BpfProgram

BPF_TRACE_MAX_PROGS: Final = 64
"""The most programs one trace event runs (kernel/trace/bpf_trace.c)."""

_IDENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\[[^\]]*\])?$")


class FilterType(enum.Enum):
    """How the ftrace filter treats a field (enum filter_type, filter_assign_type)."""

    OTHER = "other"
    DYN_STRING = "dyn_string"  # __data_loc char[]
    STATIC_STRING = "static_string"  # char name[N]
    PTR_STRING = "ptr_string"  # char * / const char *
    CPU = "cpu"  # the generic CPU field
    COMM = "comm"  # the generic COMM field
    STACKTRACE = "stacktrace"

    @property
    def is_string(self) -> bool:
        return self in (
            FilterType.DYN_STRING,
            FilterType.STATIC_STRING,
            FilterType.PTR_STRING,
            FilterType.COMM,
        )


def filter_assign_type(c_type: str) -> FilterType:
    """The filter type the kernel gives a field of C type `c_type`."""
    if "__data_loc" in c_type and "char" in c_type:
        return FilterType.DYN_STRING
    if "[" in c_type and "char" in c_type:
        return FilterType.STATIC_STRING
    if c_type in ("char *", "const char *"):
        return FilterType.PTR_STRING
    return FilterType.OTHER


@attrs.frozen
class EventField:
    """One field of a trace record, as the format file lists it."""

    decl: str
    """The C declaration: "char prev_comm[16]", "__data_loc char[] name", "int dfd"."""
    offset: int
    size: int
    signed: bool

    @property
    def name(self) -> str:
        found = _IDENT.search(self.decl)
        assert found is not None, self.decl
        return found.group(1)

    @property
    def c_type(self) -> str:
        """The declaration without the name ("char[16]" for an array, as the kernel keeps it)."""
        found = _IDENT.search(self.decl)
        assert found is not None, self.decl
        return (self.decl[: found.start()].rstrip() + (found.group(2) or "")).strip()

    @property
    def filter_type(self) -> FilterType:
        return filter_assign_type(self.c_type)

    def line(self) -> str:
        return (
            f"\tfield:{self.decl};\toffset:{self.offset};\tsize:{self.size};"
            f"\tsigned:{int(self.signed)};"
        )


COMMON_FIELDS: Final = (
    EventField("unsigned short common_type", 0, 2, False),
    EventField("unsigned char common_flags", 2, 1, False),
    EventField("unsigned char common_preempt_count", 3, 1, False),
    EventField("int common_pid", 4, 4, True),
)
"""struct trace_entry: the first 8 bytes of every trace record."""


@attrs.frozen
class GenericField:
    """A field every event's filter knows without a record slot (ftrace_generic_fields)."""

    name: str
    filter_type: FilterType
    signed: bool
    size: int


GENERIC_FIELDS: Final = (
    GenericField("CPU", FilterType.CPU, True, 4),
    GenericField("cpu", FilterType.CPU, True, 4),
    GenericField("common_cpu", FilterType.CPU, True, 4),
    GenericField("COMM", FilterType.COMM, False, 16),
    GenericField("comm", FilterType.COMM, False, 16),
    GenericField("STACKTRACE", FilterType.STACKTRACE, False, 8),
    GenericField("stacktrace", FilterType.STACKTRACE, False, 8),
)


class EventKind(enum.Enum):
    """What fires a trace event (TRACE_EVENT_FL_* of the kernel)."""

    TRACEPOINT = "tracepoint"
    SYSCALL = "syscall"  # syscalls/sys_enter_* and sys_exit_*: TRACE_EVENT_FL_CAP_ANY
    KPROBE = "kprobe"
    UPROBE = "uprobe"

    @property
    def is_probe(self) -> bool:
        return self in (EventKind.KPROBE, EventKind.UPROBE)


@attrs.frozen
class ProbeTarget:
    """Where a kprobe or uprobe event probes (bpf_get_perf_event_info reports it)."""

    name: bytes
    """The kernel function (kprobe, empty for an address probe) or the file (uprobe)."""
    offset: int
    addr: int = 0
    """The probed kernel address (kprobes)."""
    is_return: bool = False
    ref_ctr_offset: int = 0


@attrs.define(eq=False)
class AttachedProgram:
    """An entry of a trace event's program array: the program and its bpf cookie."""

    program: BpfProgram
    cookie: int


@attrs.define(eq=False)
class TraceEventCall:
    """A trace event (trace_event_call)."""

    id: int
    system: str
    name: str
    kind: EventKind
    fields: tuple[EventField, ...]
    print_fmt: str
    programs: list[AttachedProgram] = attrs.field(factory=list)
    """tp_event->prog_array."""
    perf_refcount: int = 0
    """Perf events open on this event (a dynamic event in use cannot be removed: EBUSY)."""
    enabled: bool = False
    """The tracefs `enable` file (ftrace recording, independent of perf)."""
    filter_text: str = ""
    """The tracefs `filter` file's filter (ftrace's, not a perf event's)."""
    probe: ProbeTarget | None = None
    """What a kprobe or uprobe event probes; None for tracepoints."""

    def format(self) -> bytes:
        """The tracefs format file."""
        lines = [f"name: {self.name}", f"ID: {self.id}", "format:"]
        lines += [field.line() for field in COMMON_FIELDS]
        lines.append("")
        lines += [field.line() for field in self.fields]
        lines += ["", f"print fmt: {self.print_fmt}", ""]
        return "\n".join(lines).encode()

    @property
    def record_size(self) -> int:
        """The size of the fixed part of a record (common fields and this event's fields)."""
        ends = [f.offset + f.size for f in (*COMMON_FIELDS, *self.fields)]
        return max(ends)

    def attach(self, program: BpfProgram, cookie: int) -> None:
        """Add `program` to the event's program array (perf_event_attach_bpf_prog)."""
        if len(self.programs) >= BPF_TRACE_MAX_PROGS:
            fail(errno.E2BIG, f"{self.system}/{self.name} already runs {BPF_TRACE_MAX_PROGS}")
        if any(entry.program is program for entry in self.programs):
            fail(errno.EEXIST, f"the program is already attached to {self.system}/{self.name}")
        self.programs.append(AttachedProgram(program, cookie))

    def detach(self, program: BpfProgram) -> None:
        """Remove `program` from the program array (perf_event_detach_bpf_prog)."""
        self.programs = [entry for entry in self.programs if entry.program is not program]


def syscall_enter_fields(args: Sequence[tuple[str, str]]) -> tuple[EventField, ...]:
    """The fields of syscalls/sys_enter_<name> for arguments ((C type, name), ...)."""
    fields = [EventField("int __syscall_nr", 8, 4, True)]
    fields += [
        EventField(f"{c_type} {name}", 16 + 8 * index, 8, False)
        for index, (c_type, name) in enumerate(args)
    ]
    return tuple(fields)


def syscall_enter_print_fmt(args: Sequence[tuple[str, str]]) -> str:
    """The print fmt of syscalls/sys_enter_<name> (set_syscall_print_fmt)."""
    text = ", ".join(f"{name}: 0x%08lx" for _, name in args)
    values = "".join(f", ((unsigned long)(REC->{name}))" for _, name in args)
    return f'"{text}"{values}'


SYSCALL_EXIT_FIELDS: Final = (
    EventField("int __syscall_nr", 8, 4, True),
    EventField("long ret", 16, 8, True),
)
SYSCALL_EXIT_PRINT_FMT: Final = '"0x%lx", REC->ret'

PROBE_FIELDS: Final = (EventField("unsigned long __probe_ip", 8, 8, False),)
PROBE_PRINT_FMT: Final = '"(%lx)", REC->__probe_ip'
RETPROBE_FIELDS: Final = (
    EventField("unsigned long __probe_func", 8, 8, False),
    EventField("unsigned long __probe_ret_ip", 16, 8, False),
)
RETPROBE_PRINT_FMT: Final = '"(%lx <- %lx)", REC->__probe_func, REC->__probe_ret_ip'
