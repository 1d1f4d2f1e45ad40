"""Typed perf_event_open(2) and perf event ioctl(2) wrappers (after Aya's sys/perf_event.rs).

Theory of operation
-------------------
Each opener fills a zeroed `PerfEventAttr` (size = sizeof, the newest layout bpfsys mirrors),
issues `syscall(PerfEventOpen(...))` and returns the new fd as an `OwnedFd` of the backend used.
Everything the kernel publishes in files (the dynamic PMU types of kprobe/uprobe, the retprobe
bit, tracepoint ids in tracefs) is read through `backend.read_file`, so a simulated kernel can
serve them. A file that cannot be read raises `SyscallError` with the file's errno (ENOENT for a
missing one), the path in the message and in `filename`.

`perf_event_ioctl(fd, request)` takes one `PerfEventIoctlRequest` value (Enable, Disable, Reset,
Refresh, SetBpf, Id, PauseOutput, SetOutput, SetFilter, QueryBpf), builds the raw
`PerfEventIoctl` with any memory the kernel reads or writes kept alive across the call, and
returns the ioctl's result (Id: the event id; QueryBpf: the attached program ids).

Arguments are checked (TypeError/ValueError naming the argument) before any system call, and no
fd is created before the last step that can fail, so no error path leaks one.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
import re
from typing import Final, Protocol, TypeAlias, overload

import attrs

from bpfsys.abi import (
    PERF_FLAG_FD_CLOEXEC,
    PerfEventAttr,
    PerfEventQueryBpf,
    PerfIoctl,
    PerfSwId,
    PerfType,
    SampleType,
)
from bpfsys.backend import Backend, current_backend
from bpfsys.fd import OwnedFd
from bpfsys.syscall import PerfEventIoctl, PerfEventOpen, SyscallError, syscall

PMU_ROOT: Final = "/sys/bus/event_source/devices"
TRACEFS_ROOTS: Final = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
TRACEFS_MARKER: Final = "events/header_page"
"""A file every tracefs has under its root: a root whose marker reads is a working tracefs."""
QUERY_BPF_MAX_IDS: Final = 0xFFFF
"""The largest `QueryBpf.max_ids` accepted (the kernel itself allows 64: E2BIG above)."""

_S32_MIN: Final = -(1 << 31)
_S32_MAX: Final = (1 << 31) - 1
_U64_MAX: Final = (1 << 64) - 1
_ULONG_MASK: Final = (1 << (8 * ctypes.sizeof(ctypes.c_ulong))) - 1
_FORMAT_BIT = re.compile(r"config:(\d+)")


class HasFileno(Protocol):
    def fileno(self) -> int: ...


FdLike: TypeAlias = "int | HasFileno"
PathArg: TypeAlias = "str | bytes | os.PathLike[str] | os.PathLike[bytes]"


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------
def _int_in(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _fileno(name: str, value: object) -> int:
    """An fd number from an int or an object with fileno() (an OwnedFd, a file)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _int_in(name, value, 0, _S32_MAX)
    fileno = getattr(value, "fileno", None)
    if not callable(fileno):
        raise TypeError(f"{name} must be an fd (int or object with fileno()), got {value!r}")
    return _int_in(name, fileno(), 0, _S32_MAX)


def _as_fd(value: FdLike) -> int:
    return _fileno("fd", value)


def _optional_pid(pid: int | None) -> int | None:
    return None if pid is None else _int_in("pid", pid, 0, _S32_MAX)


# ---------------------------------------------------------------------------------------------
# Files the kernel publishes
# ---------------------------------------------------------------------------------------------
def _file_error(path: str, exc: OSError, hint: str | None = None) -> SyscallError:
    """SyscallError("read_file") with the file's errno and `filename`; `hint` explains a
    missing file."""
    detail = hint if exc.errno == errno.ENOENT else None
    err = SyscallError("read_file", exc.errno or 0, detail)
    err.filename = path
    return err


def read_sysfs_text(path: str, *, backend: Backend | None = None, hint: str | None = None) -> str:
    """The stripped text of a sysfs/tracefs file; SyscallError(errno, path) when unreadable
    (`hint`, when given, is added to the message of a missing file's error)."""
    b = current_backend() if backend is None else backend
    try:
        data = b.read_file(path)
    except OSError as exc:
        raise _file_error(path, exc, hint) from None
    return data.decode("ascii", errors="replace").strip()


def _read_int(path: str, backend: Backend, hint: str | None = None) -> int:
    text = read_sysfs_text(path, backend=backend, hint=hint)
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}: expected an integer, got {text!r}") from None


def find_tracefs(backend: Backend | None = None) -> str:
    """The first of TRACEFS_ROOTS whose TRACEFS_MARKER file reads; SyscallError otherwise.

    The error carries the first root's errno (ENOENT when tracefs is not mounted there), its
    marker path as `filename`, and names every root tried.
    """
    b = current_backend() if backend is None else backend
    first: OSError | None = None
    for root in TRACEFS_ROOTS:
        try:
            b.read_file(f"{root}/{TRACEFS_MARKER}")
        except OSError as exc:
            first = first or exc
            continue
        return root
    assert first is not None
    roots = " or ".join(TRACEFS_ROOTS)
    hint = f"no tracefs at {roots} (mount -t tracefs nodev {TRACEFS_ROOTS[0]})"
    raise _file_error(f"{TRACEFS_ROOTS[0]}/{TRACEFS_MARKER}", first, hint)


# ---------------------------------------------------------------------------------------------
# perf_event_open
# ---------------------------------------------------------------------------------------------
def perf_event_open(
    attr: PerfEventAttr,
    pid: int,
    cpu: int,
    group_fd: int = -1,
    flags: int = PERF_FLAG_FD_CLOEXEC,
    *,
    backend: Backend | None = None,
) -> OwnedFd:
    """perf_event_open(&attr, pid, cpu, group_fd, flags) as an OwnedFd of `backend`.

    `attr` is passed as it is (size 0 means PERF_ATTR_SIZE_VER0 to the kernel); on E2BIG the
    kernel writes the size it supports into `attr.size`. SyscallError("perf_event_open") keeps
    the kernel's errno.
    """
    if not isinstance(attr, PerfEventAttr):
        raise TypeError(f"attr must be a PerfEventAttr, got {type(attr).__name__}")
    call = PerfEventOpen(
        attr,
        _int_in("pid", pid, _S32_MIN, _S32_MAX),
        _int_in("cpu", cpu, _S32_MIN, _S32_MAX),
        _int_in("group_fd", group_fd, _S32_MIN, _S32_MAX),
        _int_in("flags", flags, 0, _ULONG_MASK),
    )
    b = current_backend() if backend is None else backend
    return OwnedFd(syscall(call, b), b)


def _sampling_attr(type_: int, config: int) -> PerfEventAttr:
    """A RAW-sampling attr: every event is a sample, every sample wakes the reader."""
    return PerfEventAttr(
        type=type_,
        size=ctypes.sizeof(PerfEventAttr),
        config=config,
        sample_type=SampleType.RAW,
        sample_period=1,
        wakeup_events=1,
    )


def perf_event_open_bpf(cpu: int, *, backend: Backend | None = None) -> OwnedFd:
    """A PERF_COUNT_SW_BPF_OUTPUT event on `cpu` for all processes (bpf_perf_event_output)."""
    cpu = _int_in("cpu", cpu, 0, _S32_MAX)
    attr = _sampling_attr(PerfType.SOFTWARE, PerfSwId.BPF_OUTPUT)
    return perf_event_open(attr, -1, cpu, backend=backend)


class ProbeKind(enum.Enum):
    """A probe of a dynamic PMU: the value is (PMU name, return probe)."""

    KPROBE = ("kprobe", False)
    KRETPROBE = ("kprobe", True)
    UPROBE = ("uprobe", False)
    URETPROBE = ("uprobe", True)

    @property
    def pmu(self) -> str:
        return str(self.value[0])

    @property
    def is_return(self) -> bool:
        return bool(self.value[1])


def probe_pmu_type(kind: ProbeKind, *, backend: Backend | None = None) -> tuple[int, int]:
    """(PMU type, attr.config) of `kind` from PMU_ROOT/<pmu>/{type,format/retprobe}."""
    b = current_backend() if backend is None else backend
    root = f"{PMU_ROOT}/{kind.pmu}"
    hint = f"no {kind.pmu} PMU: kernel without CONFIG_{kind.pmu.upper()}_EVENTS?"
    pmu_type = _read_int(f"{root}/type", b, hint)
    if not kind.is_return:
        return pmu_type, 0
    path = f"{root}/format/retprobe"
    text = read_sysfs_text(path, backend=b, hint=hint)
    match = _FORMAT_BIT.fullmatch(text)
    if match is None or int(match.group(1)) > 63:
        raise ValueError(f"{path}: expected 'config:<bit>', got {text!r}")
    return pmu_type, 1 << int(match.group(1))


def perf_event_open_probe(
    kind: ProbeKind,
    name: PathArg,
    offset: int = 0,
    pid: int | None = None,
    *,
    backend: Backend | None = None,
) -> OwnedFd:
    """A kprobe/kretprobe on symbol `name` + `offset` or a uprobe/uretprobe on file `name` at
    file offset `offset`, through the kprobe/uprobe PMU.

    attr.config1 points at `name` as a C string, attr.config2 is `offset`. Kprobes are opened
    with pid -1 on CPU 0 (`pid` must be None); uprobes on process `pid` on any CPU, or, when
    `pid` is None, with pid -1 on CPU 0. A missing PMU raises SyscallError(ENOENT) naming the
    sysfs file.
    """
    if not isinstance(kind, ProbeKind):
        raise TypeError(f"kind must be a ProbeKind, got {type(kind).__name__}")
    if not isinstance(name, str | bytes | os.PathLike):
        raise TypeError(f"name must be a str, bytes or path, got {type(name).__name__}")
    raw_name = os.fsencode(name)
    if not raw_name or b"\0" in raw_name:
        raise ValueError(f"name must be non-empty without NUL bytes, got {name!r}")
    offset = _int_in("offset", offset, 0, _U64_MAX)
    pid = _optional_pid(pid)
    if pid is not None and kind.pmu == "kprobe":
        raise ValueError(f"pid must be None for a {kind.pmu} (they are system-wide), got {pid}")
    b = current_backend() if backend is None else backend
    pmu_type, config = probe_pmu_type(kind, backend=b)
    c_name = ctypes.create_string_buffer(raw_name)  # alive until this function returns
    attr = PerfEventAttr(
        type=pmu_type,
        size=ctypes.sizeof(PerfEventAttr),
        config=config,
        config1=ctypes.addressof(c_name),
        config2=offset,
    )
    target, cpu = (-1, 0) if pid is None else (pid, -1)
    return perf_event_open(attr, target, cpu, backend=b)


def _event_name_part(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value or value in (".", "..") or "/" in value or "\0" in value:
        raise ValueError(f"{name} must be a tracefs directory name, got {value!r}")
    return value


def perf_event_open_trace_point(
    category: str, name: str, pid: int | None = None, *, backend: Backend | None = None
) -> OwnedFd:
    """The tracepoint `category`/`name` (id from tracefs events/<category>/<name>/id) as a
    RAW-sampling PERF_TYPE_TRACEPOINT event: pid -1 on CPU 0 when `pid` is None, else process
    `pid` (0: the caller) on any CPU. An unknown tracepoint raises SyscallError(ENOENT) naming
    the id file.
    """
    category = _event_name_part("category", category)
    name = _event_name_part("name", name)
    pid = _optional_pid(pid)
    b = current_backend() if backend is None else backend
    root = find_tracefs(b)
    event_id = _read_int(f"{root}/events/{category}/{name}/id", b, "no such tracepoint")
    attr = _sampling_attr(PerfType.TRACEPOINT, event_id)
    target, cpu = (-1, 0) if pid is None else (pid, -1)
    return perf_event_open(attr, target, cpu, backend=b)


# ---------------------------------------------------------------------------------------------
# ioctl
# ---------------------------------------------------------------------------------------------
def _prog_fd(value: FdLike) -> int:
    return _fileno("prog_fd", value)


def _output_target(value: FdLike) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value == -1:
        return -1
    return _fileno("target", value)


def _count(value: int) -> int:
    return _int_in("count", value, 0, _S32_MAX)


def _max_ids(value: int) -> int:
    return _int_in("max_ids", value, 0, QUERY_BPF_MAX_IDS)


def _paused(value: bool) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"paused must be a bool, got {type(value).__name__}")
    return value


def _filter_text(value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"text must be a str, got {type(value).__name__}")
    if "\0" in value:
        raise ValueError("text must not contain NUL characters")
    return value


@attrs.frozen
class Enable:
    """PERF_EVENT_IOC_ENABLE."""


@attrs.frozen
class Disable:
    """PERF_EVENT_IOC_DISABLE."""


@attrs.frozen
class Reset:
    """PERF_EVENT_IOC_RESET: zero the event count."""


@attrs.frozen
class Refresh:
    """PERF_EVENT_IOC_REFRESH: add `count` to the overflows allowed before disabling."""

    count: int = attrs.field(converter=_count)


@attrs.frozen
class SetBpf:
    """PERF_EVENT_IOC_SET_BPF: attach program `prog_fd` (the legacy, link-less way)."""

    prog_fd: int = attrs.field(converter=_prog_fd)


@attrs.frozen
class Id:
    """PERF_EVENT_IOC_ID: the event's id, written by the kernel through a u64 pointer."""


@attrs.frozen
class PauseOutput:
    """PERF_EVENT_IOC_PAUSE_OUTPUT: stop (True) or resume (False) writing to the ring."""

    paused: bool = attrs.field(converter=_paused)


@attrs.frozen
class SetOutput:
    """PERF_EVENT_IOC_SET_OUTPUT: write into `target`'s ring (-1: back to the event's own)."""

    target: int = attrs.field(default=-1, converter=_output_target)


@attrs.frozen
class SetFilter:
    """PERF_EVENT_IOC_SET_FILTER: an ftrace filter (tracepoints) or address filter."""

    text: str = attrs.field(converter=_filter_text)


@attrs.frozen
class QueryBpf:
    """PERF_EVENT_IOC_QUERY_BPF: the ids of up to `max_ids` programs attached to a tracepoint
    event (kprobe/uprobe/tracepoint PMU events)."""

    max_ids: int = attrs.field(converter=_max_ids)


PerfEventIoctlRequest: TypeAlias = (
    Enable
    | Disable
    | Reset
    | Refresh
    | SetBpf
    | Id
    | PauseOutput
    | SetOutput
    | SetFilter
    | QueryBpf
)
_REQUEST_TYPES: Final = (
    Enable,
    Disable,
    Reset,
    Refresh,
    SetBpf,
    Id,
    PauseOutput,
    SetOutput,
    SetFilter,
    QueryBpf,
)


def _ioctl(fd: int, request: PerfIoctl, arg: int, backend: Backend) -> int:
    return syscall(PerfEventIoctl(fd, int(request), arg), backend)


@overload
def perf_event_ioctl(
    fd: FdLike, request: QueryBpf, *, backend: Backend | None = None
) -> list[int]: ...


@overload
def perf_event_ioctl(
    fd: FdLike,
    request: Enable | Disable | Reset | Refresh | SetBpf | Id | PauseOutput | SetOutput | SetFilter,
    *,
    backend: Backend | None = None,
) -> int: ...


def perf_event_ioctl(
    fd: FdLike, request: PerfEventIoctlRequest, *, backend: Backend | None = None
) -> int | list[int]:
    """Issue `request` on perf event `fd`; SyscallError("ioctl(PERF_EVENT_IOC_...)") on failure.

    The ioctl goes to `backend`, else to the backend owning `fd` when it is an OwnedFd, else to
    the current one.

    Returns the ioctl's result (0), except: Id returns the event id; QueryBpf returns the ids
    of the attached programs, at most `max_ids` of them (ENOSPC when more are attached).
    """
    raw_fd = _as_fd(fd)
    if not isinstance(request, _REQUEST_TYPES):
        raise TypeError(f"request must be a PerfEventIoctlRequest, got {type(request).__name__}")
    if backend is not None:
        b = backend
    else:
        b = fd.backend if isinstance(fd, OwnedFd) else current_backend()
    match request:
        case Enable():
            return _ioctl(raw_fd, PerfIoctl.ENABLE, 0, b)
        case Disable():
            return _ioctl(raw_fd, PerfIoctl.DISABLE, 0, b)
        case Reset():
            return _ioctl(raw_fd, PerfIoctl.RESET, 0, b)
        case Refresh(count):
            return _ioctl(raw_fd, PerfIoctl.REFRESH, count, b)
        case SetBpf(prog_fd):
            return _ioctl(raw_fd, PerfIoctl.SET_BPF, prog_fd, b)
        case PauseOutput(paused):
            return _ioctl(raw_fd, PerfIoctl.PAUSE_OUTPUT, int(paused), b)
        case SetOutput(target):
            return _ioctl(raw_fd, PerfIoctl.SET_OUTPUT, target & _ULONG_MASK, b)
        case SetFilter(text):
            c_text = ctypes.create_string_buffer(text.encode())
            return _ioctl(raw_fd, PerfIoctl.SET_FILTER, ctypes.addressof(c_text), b)
        case Id():
            event_id = ctypes.c_uint64(0)
            _ioctl(raw_fd, PerfIoctl.ID, ctypes.addressof(event_id), b)
            return event_id.value
        case QueryBpf(max_ids):
            head = ctypes.sizeof(PerfEventQueryBpf)
            buf = (ctypes.c_uint8 * (head + 4 * max_ids))()
            query = PerfEventQueryBpf.from_buffer(buf)
            query.ids_len = max_ids
            _ioctl(raw_fd, PerfIoctl.QUERY_BPF, ctypes.addressof(buf), b)
            ids = (ctypes.c_uint32 * max_ids).from_buffer(buf, head)
            return list(ids[: min(int(query.prog_cnt), max_ids)])
    raise AssertionError(f"unhandled request {request!r}")  # pragma: no cover
