"""Attaching programs to perf events: tracepoints, kprobes and uprobes (after Aya's
`programs/perf_attach.rs` and `probe.rs`, and libbpf's perf-event and legacy-probe attach).

Theory of operation
-------------------
Rules:

1. *Method.* A program is attached to a perf event fd by LINK (BPF_LINK_CREATE with attach
   type BPF_PERF_EVENT, Linux 5.15) or by IOCTL (PERF_EVENT_IOC_SET_BPF, then
   PERF_EVENT_IOC_ENABLE). AUTO picks LINK where the cached `perf_link` feature probe says the
   kernel has it, IOCTL otherwise. A forced method is used as it is (the kernel's errno if it
   cannot).
2. *Cookies need a link.* A BPF cookie travels only in LINK_CREATE, so a cookie with IOCTL
   (forced, or AUTO on a kernel without perf links) raises `AttachNotSupported` (EOPNOTSUPP)
   before any attach call.
3. *Ownership.* `perf_attach` owns the perf fd from the moment it is called: it takes the
   number out of the caller's `OwnedFd` (which reads as closed afterwards), closes it itself if
   anything fails (bad argument included), and on success the `Attachment` closes it on
   detach, as Aya's `PerfLinkInner` owns its perf fd. The program fd stays the caller's: the
   kernel holds its own reference on the program while it is attached.
4. *Probe source.* A kprobe/uprobe is opened through its PMU (`perf_event_open_probe`) when
   `/sys/bus/event_source/devices/<pmu>/type` exists, and through tracefs otherwise (or when
   forced): a uniquely named probe event is defined by writing ``p:<group>/<name> <location>``
   (``r:`` for return probes) to ``<tracefs>/<pmu>_events`` (write-only, no truncation: the
   kernel appends), the tracepoint ``<group>/<name>`` is opened and attached, and
   ``-:<group>/<name>`` removes the event on detach. Groups are ``kprobes`` and ``uprobes``;
   locations ``<symbol>+<offset>`` and ``<path>:0x<file offset>``. Names are
   ``bpfsys_<pid>_<counter>_<hint>`` (C identifiers of at most 63 characters, the kernel's
   limit), unique per process as Aya's and libbpf's are. Neither the PMU nor the events file:
   `AttachNotSupported`.
5. *Undo as it goes.* Each step that acquires something pushes its undo on an ExitStack at
   once. A failure unwinds the stack (last in, first out) and re-raises; success hands the
   stack to the `Attachment`, and `detach()` unwinds it. The order is therefore fixed:

   ==========  ====================================================================
   LINK        close link fd -> close perf fd -> remove probe event (if tracefs)
   IOCTL       ioctl DISABLE -> close perf fd -> remove probe event (if tracefs)
   ==========  ====================================================================

   The probe event goes last because the kernel refuses (EBUSY) to remove one still open.
   Every undo step runs even when an earlier one fails; the last failure is raised.

Uprobe symbols are turned into file offsets with `bpfsys.elf_symbols` from the local file (the
binary lives in the process's file system for both backends); library names such as "libc"
are not resolved: give a path. Kernel files (PMU types, tracefs) are read and written only
through the backend.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import warnings
from enum import StrEnum
from types import TracebackType
from typing import Final

import attrs

from bpfsys import bpf, features
from bpfsys.abi import AttachType
from bpfsys.backend import Backend, current_backend
from bpfsys.elf_symbols import symbol_file_offset
from bpfsys.fd import OwnedFd
from bpfsys.perf_event import (
    PMU_ROOT,
    Disable,
    Enable,
    ProbeKind,
    SetBpf,
    find_tracefs,
    perf_event_ioctl,
    perf_event_open_probe,
    perf_event_open_trace_point,
    read_sysfs_text,
)
from bpfsys.syscall import SyscallError

__all__ = [
    "AttachNotSupported",
    "Attachment",
    "PerfAttachMethod",
    "ProbeEvent",
    "ProbeSource",
    "attach_kprobe",
    "attach_tracepoint",
    "attach_uprobe",
    "perf_attach",
    "probe_event_name",
]

EVENT_NAME_MAX: Final = 63
"""Longest tracefs event name (the kernel's MAX_EVENT_NAME_LEN minus the NUL): EINVAL above."""
COOKIE_MAX: Final = (1 << 64) - 1
OFFSET_MAX: Final = (1 << 64) - 1
PID_MAX: Final = (1 << 31) - 1
_NOT_IDENTIFIER: Final = re.compile(r"[^A-Za-z0-9_]")
_event_counter = itertools.count()


class PerfAttachMethod(StrEnum):
    """How a program is attached to a perf event (rule 1)."""

    AUTO = "auto"
    LINK = "link"
    IOCTL = "ioctl"


class ProbeSource(StrEnum):
    """Where a kprobe/uprobe perf event comes from (rule 4)."""

    AUTO = "auto"
    PMU = "pmu"
    TRACEFS = "tracefs"


class AttachNotSupported(OSError):
    """The kernel cannot make this attachment (errno EOPNOTSUPP); the message says what is
    missing."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EOPNOTSUPP, message)

    def __reduce__(self) -> tuple[type[AttachNotSupported], tuple[str]]:
        return (type(self), (str(self.strerror),))


# ---------------------------------------------------------------------------------------------
# Tracefs probe events (pure: names and command lines)
# ---------------------------------------------------------------------------------------------
def probe_event_name(hint: str) -> str:
    """A new event name, unique in this process: ``bpfsys_<pid>_<counter>_<hint>`` with every
    character outside [A-Za-z0-9_] replaced by "_", cut to EVENT_NAME_MAX characters."""
    name = f"bpfsys_{os.getpid()}_{next(_event_counter)}_{hint}"
    return _NOT_IDENTIFIER.sub("_", name)[:EVENT_NAME_MAX]


@attrs.frozen
class ProbeEvent:
    """A kprobe/uprobe event defined in tracefs: `name` in the kind's group at `location`."""

    kind: ProbeKind
    name: str
    location: str
    tracefs: str

    @property
    def group(self) -> str:
        """The event group: "kprobes" or "uprobes"."""
        return f"{self.kind.pmu}s"

    @property
    def events_file(self) -> str:
        """The control file: ``<tracefs>/kprobe_events`` or ``<tracefs>/uprobe_events``."""
        return f"{self.tracefs}/{self.kind.pmu}_events"

    @property
    def definition(self) -> str:
        """The line that creates the event."""
        prefix = "r" if self.kind.is_return else "p"
        return f"{prefix}:{self.group}/{self.name} {self.location}"

    @property
    def removal(self) -> str:
        """The line that removes the event."""
        return f"-:{self.group}/{self.name}"


# ---------------------------------------------------------------------------------------------
# The attachment
# ---------------------------------------------------------------------------------------------
class Attachment:
    """A program attached to a perf event; owns what the attach created (rules 3 and 5).

    `detach()` releases it all in the documented order, once (later calls do nothing); it is
    also a context manager. An attachment dropped while attached is detached by the garbage
    collector with a ResourceWarning, so no probe event outlives the process by accident.
    """

    __slots__ = ("_backend", "_link_fd", "_method", "_perf_fd", "_probe_event", "_undo")

    def __init__(
        self,
        undo: contextlib.ExitStack,
        *,
        backend: Backend,
        method: PerfAttachMethod,
        perf_fd: OwnedFd,
        link_fd: OwnedFd | None,
        probe_event: ProbeEvent | None,
    ) -> None:
        self._undo: contextlib.ExitStack | None = undo
        self._backend = backend
        self._method = method
        self._perf_fd = perf_fd
        self._link_fd = link_fd
        self._probe_event = probe_event

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def method(self) -> PerfAttachMethod:
        """LINK or IOCTL: the method used (never AUTO)."""
        return self._method

    @property
    def perf_fd(self) -> OwnedFd:
        """The perf event (owned: closed by detach)."""
        return self._perf_fd

    @property
    def link_fd(self) -> OwnedFd | None:
        """The bpf link of the LINK method, None with IOCTL."""
        return self._link_fd

    @property
    def probe_event(self) -> ProbeEvent | None:
        """The tracefs probe event made for this attachment, if any."""
        return self._probe_event

    @property
    def detached(self) -> bool:
        return self._undo is None

    def detach(self) -> None:
        """Undo the attachment (rule 5's order); every step runs, the last failure raises."""
        undo, self._undo = self._undo, None
        if undo is not None:
            undo.close()

    def __enter__(self) -> Attachment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    def __del__(self) -> None:
        if getattr(self, "_undo", None) is not None:
            message = f"{self!r} was never detached"
            with contextlib.suppress(OSError):
                self.detach()
            warnings.warn(message, ResourceWarning, stacklevel=2)

    def __repr__(self) -> str:
        state = "detached" if self.detached else f"perf_fd={self._perf_fd.fileno()}"
        event = "" if self._probe_event is None else f" event={self._probe_event.name}"
        return f"<Attachment {self._method.value} {state}{event}>"


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------
def _int_in(name: str, value: object, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= high:
        raise ValueError(f"{name} must be in [0, {high}], got {value}")
    return value


def _cookie(value: object) -> int | None:
    return None if value is None else _int_in("cookie", value, COOKIE_MAX)


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _token(name: str, value: object) -> str:
    """A probe target written into a tracefs line: a non-empty str without blanks or NUL."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value or any(c.isspace() or c == "\0" for c in value):
        raise ValueError(f"{name} must be non-empty without blanks or NUL, got {value!r}")
    return value


def _path(value: object) -> str:
    """A file path argument: a non-empty str (or str path) without NUL."""
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(path, str):
        raise TypeError(f"binary_path must be a str or path, got {type(value).__name__}")
    if not path or "\0" in path:
        raise ValueError(f"binary_path must be non-empty without NUL, got {value!r}")
    return path


def _backend_for(backend: Backend | None, *fds: object) -> Backend:
    """`backend`, else the first OwnedFd argument's, else the current one; an OwnedFd of
    another backend is a ValueError."""
    owners = [fd.backend for fd in fds if isinstance(fd, OwnedFd)]
    chosen = backend if backend is not None else (owners[0] if owners else current_backend())
    if any(owner is not chosen for owner in owners):
        raise ValueError("an OwnedFd argument belongs to a different backend than the one used")
    return chosen


def _take_ownership(perf_fd: object) -> OwnedFd:
    """A new OwnedFd holding `perf_fd`'s number; `perf_fd` gives it up (rule 3)."""
    if not isinstance(perf_fd, OwnedFd):
        got = type(perf_fd).__name__
        raise TypeError(f"perf_fd must be an OwnedFd (perf_attach takes ownership), got {got}")
    if perf_fd.closed:
        raise ValueError("perf_fd is a closed OwnedFd")
    return OwnedFd(perf_fd.take(), perf_fd.backend)


# ---------------------------------------------------------------------------------------------
# Attaching to a perf fd
# ---------------------------------------------------------------------------------------------
def _choose_method(
    method: PerfAttachMethod, cookie: int | None, backend: Backend
) -> PerfAttachMethod:
    """Rules 1 and 2: the method to use, or AttachNotSupported for a cookie without a link."""
    chosen = method
    if chosen is PerfAttachMethod.AUTO:
        has_link = features.probe(features.Feature.PERF_LINK, backend=backend)
        chosen = PerfAttachMethod.LINK if has_link else PerfAttachMethod.IOCTL
    if cookie is not None and chosen is PerfAttachMethod.IOCTL:
        why = "the IOCTL method was asked for" if method is chosen else "this kernel has none"
        raise AttachNotSupported(
            "a BPF cookie needs a perf_event bpf_link (BPF_LINK_CREATE with BPF_PERF_EVENT, "
            f"Linux 5.15): {why}"
        )
    return chosen


def _attach(
    undo: contextlib.ExitStack,
    prog_fd: bpf.FdLike,
    perf: OwnedFd,
    *,
    cookie: int | None,
    method: PerfAttachMethod,
    backend: Backend,
    probe_event: ProbeEvent | None,
) -> Attachment:
    """Attach `prog_fd` to `perf` (whose close, and the probe event's removal, are already on
    `undo`) and hand everything to a new Attachment."""
    chosen = _choose_method(method, cookie, backend)
    link: OwnedFd | None = None
    if chosen is PerfAttachMethod.LINK:
        link = undo.enter_context(
            bpf.link_create(
                prog_fd, perf, AttachType.PERF_EVENT, bpf_cookie=cookie, backend=backend
            )
        )
    else:
        perf_event_ioctl(perf, SetBpf(prog_fd), backend=backend)
        perf_event_ioctl(perf, Enable(), backend=backend)
        undo.callback(perf_event_ioctl, perf, Disable(), backend=backend)
    return Attachment(
        undo.pop_all(),
        backend=backend,
        method=chosen,
        perf_fd=perf,
        link_fd=link,
        probe_event=probe_event,
    )


def perf_attach(
    prog_fd: bpf.FdLike,
    perf_fd: OwnedFd,
    *,
    cookie: int | None = None,
    method: PerfAttachMethod | str = PerfAttachMethod.AUTO,
    backend: Backend | None = None,
) -> Attachment:
    """Attach program `prog_fd` to the perf event `perf_fd` (rules 1-3) and return the
    Attachment, which owns `perf_fd` from now on.

    `cookie` (a u64 for bpf_get_attach_cookie) needs the LINK method: AttachNotSupported
    otherwise. The backend is `backend`, else `perf_fd`'s. Whatever fails, `perf_fd` is closed
    before the error is raised (SyscallError with the kernel's errno from LINK_CREATE or the
    ioctls, TypeError/ValueError for bad arguments).
    """
    perf = _take_ownership(perf_fd)
    with contextlib.ExitStack() as undo:
        undo.callback(perf.close)
        b = _backend_for(backend if backend is not None else perf.backend, perf, prog_fd)
        return _attach(
            undo,
            prog_fd,
            perf,
            cookie=_cookie(cookie),
            method=PerfAttachMethod(method),
            backend=b,
            probe_event=None,
        )


def attach_tracepoint(
    prog_fd: bpf.FdLike,
    category: str,
    name: str,
    *,
    cookie: int | None = None,
    method: PerfAttachMethod | str = PerfAttachMethod.AUTO,
    backend: Backend | None = None,
) -> Attachment:
    """Attach a BPF_PROG_TYPE_TRACEPOINT program to tracepoint `category`/`name` (its id read
    from tracefs through the backend); see `perf_attach` for `cookie` and `method`."""
    cookie, chosen = _cookie(cookie), PerfAttachMethod(method)
    b = _backend_for(backend, prog_fd)
    perf = perf_event_open_trace_point(category, name, backend=b)
    return perf_attach(prog_fd, perf, cookie=cookie, method=chosen, backend=b)


# ---------------------------------------------------------------------------------------------
# Kprobes and uprobes
# ---------------------------------------------------------------------------------------------
def _pmu_present(kind: ProbeKind, backend: Backend) -> bool:
    """Whether the kind's PMU exists: its sysfs type file reads (ENOENT: no)."""
    try:
        read_sysfs_text(f"{PMU_ROOT}/{kind.pmu}/type", backend=backend)
    except SyscallError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def _write_tracefs(path: str, line: str, backend: Backend) -> None:
    """Write one command line to a tracefs control file; SyscallError("write_file") with the
    kernel's errno and `filename` on failure."""
    try:
        backend.write_file(path, line.encode())
    except OSError as exc:
        err = SyscallError("write_file", exc.errno or 0, repr(line))
        err.filename = path
        raise err from None


def _define_probe_event(
    undo: contextlib.ExitStack, kind: ProbeKind, location: str, hint: str, backend: Backend
) -> ProbeEvent:
    """Create a tracefs probe event at `location` and push its removal on `undo`."""
    if any(c.isspace() for c in location):
        raise ValueError(f"{kind.pmu} location {location!r} has blanks: tracefs cannot take it")
    event = ProbeEvent(kind, probe_event_name(hint), location, find_tracefs(backend))
    try:
        backend.read_file(event.events_file)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise SyscallError("read_file", exc.errno or 0, event.events_file) from None
        raise AttachNotSupported(
            f"no {kind.pmu} PMU ({PMU_ROOT}/{kind.pmu}/type) and no {event.events_file}: "
            f"this kernel cannot make {kind.pmu}s (CONFIG_{kind.pmu.upper()}_EVENTS off?)"
        ) from None
    _write_tracefs(event.events_file, event.definition, backend)
    undo.callback(_write_tracefs, event.events_file, event.removal, backend)
    return event


def _attach_probe(
    prog_fd: bpf.FdLike,
    kind: ProbeKind,
    target: str,
    offset: int,
    pid: int | None,
    *,
    location: str,
    hint: str,
    cookie: int | None,
    method: PerfAttachMethod,
    source: ProbeSource,
    backend: Backend,
) -> Attachment:
    """Open the probe (rule 4: PMU or tracefs event) and attach `prog_fd` to it."""
    if source is ProbeSource.AUTO:
        source = ProbeSource.PMU if _pmu_present(kind, backend) else ProbeSource.TRACEFS
    with contextlib.ExitStack() as undo:
        event: ProbeEvent | None = None
        if source is ProbeSource.PMU:
            perf = perf_event_open_probe(kind, target, offset, pid, backend=backend)
        else:
            event = _define_probe_event(undo, kind, location, hint, backend)
            perf = perf_event_open_trace_point(event.group, event.name, pid, backend=backend)
        undo.callback(perf.close)
        return _attach(
            undo,
            prog_fd,
            perf,
            cookie=cookie,
            method=method,
            backend=backend,
            probe_event=event,
        )


def attach_kprobe(
    prog_fd: bpf.FdLike,
    symbol: str,
    offset: int = 0,
    retprobe: bool = False,
    *,
    cookie: int | None = None,
    method: PerfAttachMethod | str = PerfAttachMethod.AUTO,
    source: ProbeSource | str = ProbeSource.AUTO,
    backend: Backend | None = None,
) -> Attachment:
    """Attach a BPF_PROG_TYPE_KPROBE program to kernel function `symbol` + `offset` (a
    kretprobe on its return when `retprobe`), system-wide.

    The probe comes from the kprobe PMU, else from ``<tracefs>/kprobe_events`` (rule 4); a
    kernel with neither raises AttachNotSupported (EOPNOTSUPP). An unknown symbol is the
    kernel's error (SyscallError). See `perf_attach` for `cookie` and `method`.
    """
    symbol = _token("symbol", symbol)
    offset = _int_in("offset", offset, OFFSET_MAX)
    kind = ProbeKind.KRETPROBE if _bool("retprobe", retprobe) else ProbeKind.KPROBE
    return _attach_probe(
        prog_fd,
        kind,
        symbol,
        offset,
        None,
        location=f"{symbol}+{offset}",
        hint=symbol,
        cookie=_cookie(cookie),
        method=PerfAttachMethod(method),
        source=ProbeSource(source),
        backend=_backend_for(backend, prog_fd),
    )


def attach_uprobe(
    prog_fd: bpf.FdLike,
    binary_path: str | os.PathLike[str],
    symbol: str | None = None,
    offset: int = 0,
    pid: int | None = None,
    retprobe: bool = False,
    *,
    cookie: int | None = None,
    method: PerfAttachMethod | str = PerfAttachMethod.AUTO,
    source: ProbeSource | str = ProbeSource.AUTO,
    backend: Backend | None = None,
) -> Attachment:
    """Attach a BPF_PROG_TYPE_KPROBE program to a user-space location (a uretprobe on the
    function's return when `retprobe`).

    The location is file offset `offset` of `binary_path` (made absolute), or, with `symbol`,
    that function's file offset (from the ELF symbol tables, `bpfsys.elf_symbols`) plus
    `offset`. `pid` limits the probe to one process; None probes every process. The probe
    comes from the uprobe PMU, else from ``<tracefs>/uprobe_events`` (rule 4). A missing
    symbol is a `SymbolError` (ValueError) before any system call. See `perf_attach` for
    `cookie` and `method`.
    """
    path = os.path.abspath(_path(binary_path))
    offset = _int_in("offset", offset, OFFSET_MAX)
    if pid is not None:
        _int_in("pid", pid, PID_MAX)
    kind = ProbeKind.URETPROBE if _bool("retprobe", retprobe) else ProbeKind.UPROBE
    cookie, chosen, source = _cookie(cookie), PerfAttachMethod(method), ProbeSource(source)
    b = _backend_for(backend, prog_fd)
    if symbol is not None:
        offset += symbol_file_offset(path, _token("symbol", symbol))
    if offset > OFFSET_MAX:
        raise ValueError(f"the file offset of {symbol!r} plus offset is past {OFFSET_MAX:#x}")
    return _attach_probe(
        prog_fd,
        kind,
        path,
        offset,
        pid,
        location=f"{path}:{offset:#x}",
        hint=f"{os.path.basename(path)}_{symbol or ''}_{offset:x}",
        cookie=cookie,
        method=chosen,
        source=source,
        backend=b,
    )
