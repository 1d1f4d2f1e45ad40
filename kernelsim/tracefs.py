"""tracefs: tracepoint ids and formats, kprobe_events/uprobe_events, trace_pipe.

Theory of operation
-------------------
`Tracefs` is the kernel's list of trace events (trace_event_call): the static tracepoints and
syscall events of `kernelsim.perf.tracepoint_table` with the ids the live kernel gave them, and
the dynamic kprobe and uprobe events written into kprobe_events / uprobe_events. It serves the
same files at /sys/kernel/tracing and /sys/kernel/debug/tracing:

* events/<system>/<event>/{id,format,enable,filter,trigger}, events/<system>/enable,
  events/enable, events/header_page, events/header_event, available_events;
* kprobe_events and uprobe_events: each write is a list of lines in the legacy syntax
  ("p[:[GRP/][EVENT]] PLACE [ARGS]", "r[MAXACTIVE][:...]", "-:[GRP/]EVENT", "#" comments),
  processed in order; the first bad line fails the write with the kernel's errno (EINVAL for
  syntax, ENOENT for an unknown symbol or file or event, EEXIST for a duplicate, EBUSY for an
  event in use) and the lines before it stay applied. New events get the smallest free id
  above the static ones (the kernel's ida), and appear in events/<group>/<event>/;
* trace_pipe (a consuming read of the lines `trace_printk` appended), trace, tracing_on,
  current_tracer, available_tracers, trace_clock, available_filter_functions.

Read-only files refuse writes with EINVAL, as tracefs files without a write op do for root.
The probe PMUs make "local" trace events (id 0, not listed) with `local_probe_event`.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import attrs

from kernelsim.errors import fail
from kernelsim.perf import kallsyms
from kernelsim.perf.filter import parse_filter
from kernelsim.perf.trace_event import (
    PROBE_FIELDS,
    PROBE_PRINT_FMT,
    RETPROBE_FIELDS,
    RETPROBE_PRINT_FMT,
    SYSCALL_EXIT_FIELDS,
    SYSCALL_EXIT_PRINT_FMT,
    EventField,
    EventKind,
    ProbeTarget,
    TraceEventCall,
    syscall_enter_fields,
    syscall_enter_print_fmt,
)
from kernelsim.perf.tracepoint_table import SYSCALLS, TRACEPOINTS
from kernelsim.vfs import VirtualFile

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

TRACEFS_ROOTS: Final = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
HEADER_PAGE: Final = (
    b"\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
    b"\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n"
    b"\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
    b"\tfield: char data;\toffset:16;\tsize:4080;\tsigned:0;\n"
)
HEADER_EVENT: Final = (
    b"# compressed entry header\n\ttype_len    :    5 bits\n\ttime_delta  :   27 bits\n"
    b"\tarray       :   32 bits\n\n\tpadding     : type == 29\n\ttime_extend : type == 30\n"
    b"\ttime_stamp : type == 31\n\tdata max type_len  == 28\n"
)
TRIGGER_HELP: Final = (
    b"# Available triggers:\n# traceon traceoff stacktrace enable_event disable_event\n"
)
TRACE_HEADER: Final = (
    "# tracer: nop\n#\n# entries-in-buffer/entries-written: {n}/{n}   #P:{cpus}\n#\n"
    "#                                _-----=> irqs-off/BH-disabled\n"
    "#                               / _----=> need-resched\n"
    "#                              | / _---=> hardirq/softirq\n"
    "#                              || / _--=> preempt-depth\n"
    "#                              ||| / _-=> migrate-disable\n"
    "#                              |||| /     delay\n"
    "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION\n"
    "#              | |         |   |||||     |         |\n"
)
MAX_EVENT_NAME_LEN: Final = 64
X86_REGS: Final = frozenset(
    {"ax", "bx", "cx", "dx", "si", "di", "bp", "sp", "ip", "flags", "cs", "ss", "ds", "es"}
    | {"fs", "gs", "orig_ax", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}
)
# Probe argument types: name -> (field C type, size, printf format, signed).
ARG_TYPES: Final[dict[str, tuple[str, int, str, bool]]] = {
    **{f"u{b}": (f"u{b}", b // 8, "%Lu" if b == 64 else "%u", False) for b in (8, 16, 32, 64)},
    **{f"s{b}": (f"s{b}", b // 8, "%Ld" if b == 64 else "%d", True) for b in (8, 16, 32, 64)},
    **{f"x{b}": (f"u{b}", b // 8, "0x%Lx" if b == 64 else "0x%x", False) for b in (8, 16, 32, 64)},
    "string": ("__data_loc char[]", 4, '\\"%s\\"', False),
    "ustring": ("__data_loc char[]", 4, '\\"%s\\"', False),
}
_GOOD_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_STACK_ARG: Final = re.compile(r"\$stack(\d+)?\Z")
_DEREF_ARG: Final = re.compile(r"[+-]?(0x[0-9a-fA-F]+|\d+)\((.*)\)\Z")


@attrs.frozen
class ProbeArg:
    """One argument of a dynamic probe: NAME=FETCHARG[:TYPE]."""

    name: str
    fetch: str
    type: str


@attrs.frozen
class ProbePlace:
    """Where a dynamic probe is, as parsed from its definition."""

    shown: str
    """The place as the listing shows it ("do_sys_openat2+4", "/bin/ls:0x...10")."""
    auto_name: str
    """The event name the kernel makes up when the definition gives none."""
    target: ProbeTarget
    path: str = ""
    """The real path of a uprobe's file (uprobes at one file offset share a ref_ctr_offset)."""

    @property
    def is_return(self) -> bool:
        return self.target.is_return


@attrs.frozen
class DynamicProbe:
    """A kprobe_events/uprobe_events definition and its trace event."""

    call: TraceEventCall
    place: ProbePlace
    args: tuple[ProbeArg, ...]
    maxactive: int = 0

    def listing(self) -> str:
        kind = "r" if self.place.is_return else "p"
        if self.place.is_return and self.maxactive:
            kind += str(self.maxactive)
        text = f"{kind}:{self.call.system}/{self.call.name} {self.place.shown}"
        text += "".join(f" {arg.name}={arg.fetch}" for arg in self.args)
        return text + "\n"


def _is_good_name(name: str) -> bool:
    return bool(_GOOD_NAME.match(name)) and len(name) < MAX_EVENT_NAME_LEN


def _parse_number(text: str) -> int:
    """kstrtoul with base 0; EINVAL when it is not a number."""
    try:
        return int(text, 0)
    except ValueError:
        fail(errno.EINVAL, f"not a number: {text!r}")


def _is_kprobe_arg(fetch: str, is_kprobe: bool) -> bool:
    """$argN: a function argument (kprobes only)."""
    return is_kprobe and fetch.startswith("$arg") and fetch[4:].isdigit()


def _check_fetcharg(fetch: str, is_return: bool, is_kprobe: bool) -> None:
    """EINVAL unless `fetch` is a fetch argument of the probe syntax."""
    deref = _DEREF_ARG.match(fetch)
    if deref is not None:
        _check_fetcharg(deref.group(2), is_return, is_kprobe)
    elif fetch.startswith("%"):
        if fetch[1:] not in X86_REGS:
            fail(errno.EINVAL, f"no register {fetch!r}")
    elif fetch.startswith("@"):
        if not fetch[1:]:
            fail(errno.EINVAL, "@ without an address")
    elif fetch == "$retval":
        if not is_return:
            fail(errno.EINVAL, "$retval is only for return probes")
    elif not (fetch == "$comm" or _STACK_ARG.match(fetch) or _is_kprobe_arg(fetch, is_kprobe)):
        fail(errno.EINVAL, f"bad fetch argument {fetch!r}")


def _parse_args(words: list[str], is_return: bool, is_kprobe: bool) -> tuple[ProbeArg, ...]:
    args: list[ProbeArg] = []
    for index, word in enumerate(words, 1):
        name, sep, rest = word.partition("=")
        if not sep:
            name, rest = f"arg{index}", word
        if not _is_good_name(name) or any(a.name == name for a in args):
            fail(errno.EINVAL, f"bad or duplicate argument name {name!r}")
        fetch, _, arg_type = rest.partition(":")
        arg_type = arg_type or "x64"
        if arg_type not in ARG_TYPES:
            fail(errno.EINVAL, f"unknown argument type {arg_type!r}")
        _check_fetcharg(fetch, is_return, is_kprobe)
        args.append(ProbeArg(name, fetch, arg_type))
    return tuple(args)


def probe_fields(is_return: bool, args: tuple[ProbeArg, ...]) -> tuple[tuple[EventField, ...], str]:
    """(fields, print fmt) of a probe event with `args` (trace_probe's layout: no padding)."""
    fields = list(RETPROBE_FIELDS if is_return else PROBE_FIELDS)
    fmt = RETPROBE_PRINT_FMT if is_return else PROBE_PRINT_FMT
    text, values = fmt.split(", ", 1)
    text = text[:-1]
    offset = fields[-1].offset + fields[-1].size
    for arg in args:
        c_type, size, printf, signed = ARG_TYPES[arg.type]
        fields.append(EventField(f"{c_type} {arg.name}", offset, size, signed))
        offset += size
        text += f" {arg.name}={printf}"
        is_string = c_type.startswith("__data_loc")
        values += f", __get_str({arg.name})" if is_string else f", REC->{arg.name}"
    return tuple(fields), f'{text}", {values}'


class Tracefs:
    """The trace events and the tracefs files of a kernel."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.events: dict[int, TraceEventCall] = {}
        self.probes: dict[int, DynamicProbe] = {}
        """The dynamic events by id."""
        self.pipe: list[bytes] = []
        """Lines not yet read from trace_pipe."""
        self.written: list[bytes] = []
        """Every line written to the trace buffer (the `trace` file)."""
        self.first_dynamic_id = 0

    # -- the event list -----------------------------------------------------------------------
    def boot(self) -> None:
        for system, name, event_id, fields, print_fmt in TRACEPOINTS:
            self._add(
                TraceEventCall(
                    event_id,
                    system,
                    name,
                    EventKind.TRACEPOINT,
                    tuple(EventField(*f) for f in fields),
                    print_fmt,
                )
            )
        for syscall, enter_id, exit_id, args in SYSCALLS:
            enter_fields = syscall_enter_fields(args)
            enter_fmt = syscall_enter_print_fmt(args)
            self._add(
                TraceEventCall(
                    enter_id,
                    "syscalls",
                    f"sys_enter_{syscall}",
                    EventKind.SYSCALL,
                    enter_fields,
                    enter_fmt,
                )
            )
            self._add(
                TraceEventCall(
                    exit_id,
                    "syscalls",
                    f"sys_exit_{syscall}",
                    EventKind.SYSCALL,
                    SYSCALL_EXIT_FIELDS,
                    SYSCALL_EXIT_PRINT_FMT,
                )
            )
        self.first_dynamic_id = max(self.events) + 1
        for root in TRACEFS_ROOTS:
            self.kernel.vfs.add_resolver(root, self._resolve)
        self.kernel.vfs.add("/proc/kallsyms", self._read_kallsyms)

    def _add(self, call: TraceEventCall) -> None:
        self.events[call.id] = call

    def by_id(self, event_id: int) -> TraceEventCall | None:
        return self.events.get(event_id)

    def by_name(self, system: str, name: str) -> TraceEventCall | None:
        for call in self.events.values():
            if (call.system, call.name) == (system, name):
                return call
        return None

    def _free_id(self) -> int:
        event_id = self.first_dynamic_id
        while event_id in self.events:
            event_id += 1
        return event_id

    def local_probe_event(self, kind: EventKind, probe: ProbeTarget) -> TraceEventCall:
        """A probe PMU's trace event (create_local_trace_kprobe/uprobe): id 0, not in tracefs,
        named after the function or "DUMMY_EVENT"."""
        system = "kprobes" if kind is EventKind.KPROBE else "uprobes"
        name = probe.name.decode("latin-1") if kind is EventKind.KPROBE and probe.name else ""
        fields, fmt = probe_fields(probe.is_return, ())
        return TraceEventCall(0, system, name or "DUMMY_EVENT", kind, fields, fmt, probe=probe)

    # -- kprobe_events / uprobe_events ----------------------------------------------------------
    def write_probe_events(self, kind: EventKind, data: bytes) -> None:
        """A write to kprobe_events (KPROBE) or uprobe_events (UPROBE)."""
        for raw_line in data.decode("latin-1").split("\n"):
            line = raw_line.split("#", 1)[0].strip()
            if line:
                self._probe_command(kind, line)

    def _probe_command(self, kind: EventKind, line: str) -> None:
        words = line.split()
        head = words[0]
        command, _, event = head.partition(":")
        if command == "-":
            self._remove_probe(kind, event)
            return
        if command[:1] not in ("p", "r") or (command[1:] and not command[1:].isdigit()):
            fail(errno.EINVAL, f"unknown probe command {head!r}")
        is_return = command[0] == "r"
        maxactive = int(command[1:]) if command[1:] else 0
        if maxactive and (not is_return or kind is EventKind.UPROBE):
            fail(errno.EINVAL, "maxactive is for kretprobes only")
        if len(words) < 2:
            fail(errno.EINVAL, "no probe place")
        group, _, name = event.rpartition("/")
        group = group or ("kprobes" if kind is EventKind.KPROBE else "uprobes")
        if kind is EventKind.KPROBE:
            place = self._kprobe_place(words[1], is_return)
        else:
            place = self._uprobe_place(words[1], is_return)
        name = name or place.auto_name
        if not _is_good_name(group) or not _is_good_name(name):
            fail(errno.EINVAL, f"bad event name {group}/{name}")
        if self.by_name(group, name) is not None:
            fail(errno.EEXIST, f"event {group}/{name} exists")
        args = _parse_args(words[2:], place.is_return, kind is EventKind.KPROBE)
        fields, fmt = probe_fields(place.is_return, args)
        call = TraceEventCall(self._free_id(), group, name, kind, fields, fmt, probe=place.target)
        self._add(call)
        self.probes[call.id] = DynamicProbe(call, place, args, maxactive)

    def _kprobe_place(self, place: str, is_return: bool) -> ProbePlace:
        symbol_name, _, offset_text = place.partition("+")
        if symbol_name.startswith("0x"):
            symbol = kallsyms.kprobe_symbol(_parse_number(symbol_name))
            offset = 0
        else:
            symbol = kallsyms.kprobe_symbol(symbol_name)
            offset = _parse_number(offset_text) if offset_text else 0
        if symbol is None:
            fail(errno.ENOENT, f"no probeable kernel function at {place!r}")
        if offset >= symbol.size:
            fail(errno.EINVAL, f"offset {offset} is beyond {symbol.name}")
        auto = f"{'r' if is_return else 'p'}_{symbol.name}_{offset}"
        shown = f"{symbol.name}+{offset}" if offset else symbol.name
        target = ProbeTarget(symbol.name.encode(), offset, symbol.address + offset, is_return)
        return ProbePlace(shown, auto, target)

    def _uprobe_place(self, place: str, is_return: bool) -> ProbePlace:
        if place.endswith("%return"):
            is_return, place = True, place[: -len("%return")]
        path, sep, rest = place.rpartition(":")
        if not sep or not path:
            fail(errno.EINVAL, f"uprobe place {place!r} needs PATH:OFFSET")
        offset_text, paren, ref_text = rest.partition("(")
        ref_ctr = 0
        if paren:
            if not ref_text.endswith(")"):
                fail(errno.EINVAL, f"bad reference counter offset in {place!r}")
            ref_ctr = _parse_number(ref_text[:-1])
        offset = _parse_number(offset_text)
        try:
            real = os.path.realpath(path, strict=True)
        except OSError as exc:
            fail(exc.errno or errno.ENOENT, f"uprobe file {path!r}: {exc.strerror}")
        if not os.path.isfile(real):
            fail(errno.EINVAL, f"uprobe file {path!r} is not a regular file")
        for other in self.probes.values():
            theirs = other.place
            same_place = (theirs.path, theirs.target.offset) == (real, offset)
            if same_place and theirs.target.ref_ctr_offset != ref_ctr:
                fail(errno.EINVAL, "reference counter offset mismatch with an existing uprobe")
        tail = os.path.basename(path).split(".", 1)[0]
        shown = f"{path}:0x{offset:016x}" + (f"(0x{ref_ctr:x})" if ref_ctr else "")
        target = ProbeTarget(path.encode(), offset, 0, is_return, ref_ctr)
        return ProbePlace(shown, f"p_{tail}_{offset:#x}", target, real)

    def _remove_probe(self, kind: EventKind, event: str) -> None:
        group, _, name = event.rpartition("/")
        for event_id, probe in self.probes.items():
            call = probe.call
            if call.kind is kind and call.name == name and group in ("", call.system):
                if call.perf_refcount or call.enabled:
                    fail(errno.EBUSY, f"event {call.system}/{name} is in use")
                del self.probes[event_id]
                del self.events[event_id]
                return
        fail(errno.ENOENT, f"no {kind.value} event {event!r}")

    def _probe_listing(self, kind: EventKind) -> bytes:
        lines = [p.listing() for p in self.probes.values() if p.call.kind is kind]
        return "".join(lines).encode()

    # -- the trace buffer -----------------------------------------------------------------------
    def trace_printk(
        self, message: bytes, cpu: int = 0, *, pid: int | None = None, comm: str | None = None
    ) -> None:
        """Append a bpf_trace_printk line to the trace buffer (read back from trace_pipe), as
        task `pid`/`comm` (default: the simulated process)."""
        config = self.kernel.config
        pid = config.pid if pid is None else pid
        comm = config.comm if comm is None else comm
        seconds, nanos = divmod(self.kernel.now_ns, 1_000_000_000)
        text = message.decode("latin-1").rstrip("\n")
        line = (
            f"{comm[:16]:>16}-{pid:<7} [{cpu:03d}] ..... "
            f"{seconds:5d}.{nanos // 1000:06d}: bpf_trace_printk: {text}\n"
        ).encode("latin-1")
        self.pipe.append(line)
        self.written.append(line)

    def _read_pipe(self) -> bytes:
        data = b"".join(self.pipe)
        self.pipe.clear()
        return data

    def _read_trace(self) -> bytes:
        head = TRACE_HEADER.format(n=len(self.written), cpus=self.kernel.config.online)
        return head.encode() + b"".join(self.written)

    # -- files ----------------------------------------------------------------------------------
    def _read_kallsyms(self) -> bytes:
        kernel = self.kernel
        show = kernel.capable_sys_admin() or kernel.sysctl["perf_event_paranoid"] <= 1
        return kallsyms.kallsyms(show)

    def _read_only(self, reader: Callable[[], bytes]) -> VirtualFile:
        return VirtualFile(reader, self._refuse_write)

    def _refuse_write(self, data: bytes) -> None:
        if not self.kernel.capable_sys_admin():
            fail(errno.EACCES, "tracefs files are root's")
        fail(errno.EINVAL, "this tracefs file has no write operation")

    def _directory(self) -> VirtualFile:
        def read() -> bytes:
            fail(errno.EISDIR, "a tracefs directory")

        return VirtualFile(read)

    def _systems(self) -> dict[str, list[TraceEventCall]]:
        systems: dict[str, list[TraceEventCall]] = {}
        for call in self.events.values():
            systems.setdefault(call.system, []).append(call)
        return systems

    def _resolve(self, rest: str) -> VirtualFile | None:
        """The tracefs file at `rest` below a tracefs root."""
        if not self.kernel.capable_sys_admin():
            return VirtualFile(self._denied, self._refuse_write)
        fixed = self._fixed_files()
        if rest in fixed:
            return fixed[rest]
        parts = rest.split("/")
        if rest in ("events", "instances", "options", "per_cpu"):
            return self._directory()
        if parts[0] != "events" or len(parts) < 3:
            return None
        systems = self._systems()
        if parts[1] not in systems:
            return None
        calls = systems[parts[1]]
        if len(parts) == 3:
            if parts[2] == "enable":
                return VirtualFile(
                    lambda: _enable_summary(calls), lambda data: _set_enable(calls, data)
                )
            found = [c for c in calls if c.name == parts[2]]
            return self._directory() if found else None
        call = next((c for c in calls if c.name == parts[2]), None)
        if call is None or len(parts) != 4:
            return None
        return self._event_file(call, parts[3])

    def _denied(self) -> bytes:
        fail(errno.EACCES, "tracefs is readable by root only")

    def _fixed_files(self) -> dict[str, VirtualFile]:
        return {
            "events/header_page": self._read_only(lambda: HEADER_PAGE),
            "events/header_event": self._read_only(lambda: HEADER_EVENT),
            "events/enable": VirtualFile(
                lambda: _enable_summary(list(self.events.values())),
                lambda data: _set_enable(list(self.events.values()), data),
            ),
            "available_events": self._read_only(
                lambda: "".join(f"{c.system}:{c.name}\n" for c in self.events.values()).encode()
            ),
            "kprobe_events": VirtualFile(
                lambda: self._probe_listing(EventKind.KPROBE),
                lambda data: self.write_probe_events(EventKind.KPROBE, data),
            ),
            "uprobe_events": VirtualFile(
                lambda: self._probe_listing(EventKind.UPROBE),
                lambda data: self.write_probe_events(EventKind.UPROBE, data),
            ),
            "trace_pipe": self._read_only(self._read_pipe),
            "trace": VirtualFile(self._read_trace, lambda data: self.written.clear()),
            "tracing_on": self._read_only(lambda: b"1\n"),
            "current_tracer": self._read_only(lambda: b"nop\n"),
            "available_tracers": self._read_only(lambda: b"blk function nop\n"),
            "trace_clock": self._read_only(
                lambda: b"[local] global counter uptime perf mono mono_raw boot tai x86-tsc\n"
            ),
            "available_filter_functions": self._read_only(kallsyms.available_filter_functions),
        }

    def _event_file(self, call: TraceEventCall, name: str) -> VirtualFile | None:
        if name == "id":
            return self._read_only(lambda: f"{call.id}\n".encode())
        if name == "format":
            return self._read_only(call.format)
        if name == "enable":
            return VirtualFile(
                lambda: b"1\n" if call.enabled else b"0\n", lambda data: _set_enable([call], data)
            )
        if name == "filter":
            return VirtualFile(
                lambda: f"{call.filter_text or 'none'}\n".encode(),
                lambda data: _set_filter(call, data),
            )
        if name == "trigger":
            return VirtualFile(lambda: TRIGGER_HELP, lambda data: None)
        return None


def _enable_summary(calls: list[TraceEventCall]) -> bytes:
    states = {call.enabled for call in calls}
    if len(states) > 1:
        return b"X\n"
    return b"1\n" if states == {True} else b"0\n"


def _set_enable(calls: list[TraceEventCall], data: bytes) -> None:
    value = data.strip()
    if value not in (b"0", b"1"):
        fail(errno.EINVAL, f"enable takes 0 or 1, not {data!r}")
    for call in calls:
        call.enabled = value == b"1"


def _set_filter(call: TraceEventCall, data: bytes) -> None:
    """A write to an event's filter file: "0" removes the filter, anything else must parse."""
    text = data.decode("latin-1").strip()
    if text == "0":
        call.filter_text = ""
        return
    parse_filter(text, call.fields)
    call.filter_text = text


def boot(kernel: Kernel) -> None:
    """Load the trace events of `kernel` and serve tracefs and /proc/kallsyms."""
    kernel.subsystem(Tracefs).boot()
