"""One entry point for every system call bpfsys makes: `syscall(Syscall) -> int`.

A `Syscall` is a small frozen value (`Ebpf`, `PerfEventOpen`, `PerfEventIoctl`); `syscall()`
dispatches it to the current backend and turns the backend's `OSError` into a `SyscallError`
that names the call (for example ``bpf(BPF_MAP_CREATE)``) and keeps the kernel's errno. The typed
wrappers in `bpf.py` and `perf_event.py` build these values; nothing else calls a backend's
bpf/perf_event_open/ioctl directly.
"""

from __future__ import annotations

import ctypes
import os
from typing import TypeAlias

import attrs

from bpfsys.abi import BpfCmd, perf_ioctl_name
from bpfsys.backend import Backend, Mapping, current_backend

AttrImage: TypeAlias = "ctypes.Structure | ctypes.Union"


class SyscallError(OSError):
    """A system call failed: `call` names it, `errno` is the kernel's error number."""

    def __init__(self, call: str, err: int, detail: str | None = None) -> None:
        message = os.strerror(err) if detail is None else f"{os.strerror(err)}: {detail}"
        super().__init__(err, f"{call}: {message}")
        self.call = call

    def __reduce__(self) -> tuple[type[SyscallError], tuple[str, int, str | None]]:
        return (type(self), (self.call, self.errno or 0, None))


def _bpf_cmd(value: int) -> BpfCmd:
    return value if type(value) is BpfCmd else BpfCmd(value)


@attrs.frozen
class Ebpf:
    """bpf(cmd, &attr, sizeof(attr))."""

    cmd: BpfCmd = attrs.field(converter=_bpf_cmd)
    attr: AttrImage

    @property
    def name(self) -> str:
        return f"bpf(BPF_{self.cmd.name})"


@attrs.frozen
class PerfEventOpen:
    """perf_event_open(&attr, pid, cpu, group_fd, flags)."""

    attr: AttrImage
    pid: int
    cpu: int
    group: int = -1
    flags: int = 0

    @property
    def name(self) -> str:
        return "perf_event_open"


@attrs.frozen
class PerfEventIoctl:
    """ioctl(fd, request, arg) on a perf event fd."""

    fd: int
    request: int
    arg: int = 0

    @property
    def name(self) -> str:
        return f"ioctl({perf_ioctl_name(self.request)})"


Syscall: TypeAlias = Ebpf | PerfEventOpen | PerfEventIoctl


def _detail(exc: OSError) -> str | None:
    """What a backend said beyond the plain strerror (the simulator names the failed check)."""
    plain = os.strerror(exc.errno or 0)
    text = exc.strerror or ""
    extra = text.removeprefix(plain).strip(" :")
    return extra or None


def syscall(call: Syscall, backend: Backend | None = None) -> int:
    """Issue `call` on `backend` (default: the current one); raise SyscallError on failure."""
    b = current_backend() if backend is None else backend
    try:
        if type(call) is Ebpf:  # the common case first, without the match's pattern tests
            attr = call.attr
            return b.bpf(int(call.cmd), attr, ctypes.sizeof(attr))
        match call:
            case Ebpf(cmd, attr):
                return b.bpf(int(cmd), attr, ctypes.sizeof(attr))
            case PerfEventOpen(attr, pid, cpu, group, flags):
                return b.perf_event_open(attr, pid, cpu, group, flags)
            case PerfEventIoctl(fd, request, arg):
                return b.ioctl(fd, request, arg)
    except SyscallError:
        raise
    except OSError as exc:
        raise SyscallError(call.name, exc.errno or 0, _detail(exc)) from None


def mmap(
    fd: int, length: int, prot: int, flags: int, offset: int = 0, backend: Backend | None = None
) -> Mapping:
    """mmap(2) of an fd through the backend; SyscallError("mmap") on failure."""
    b = current_backend() if backend is None else backend
    try:
        return b.mmap(fd, length, prot, flags, offset)
    except OSError as exc:
        raise SyscallError("mmap", exc.errno or 0, _detail(exc)) from None


def munmap(mapping: Mapping, backend: Backend | None = None) -> None:
    """munmap(2) through the backend; SyscallError("munmap") on failure."""
    b = current_backend() if backend is None else backend
    try:
        b.munmap(mapping)
    except OSError as exc:
        raise SyscallError("munmap", exc.errno or 0, _detail(exc)) from None
