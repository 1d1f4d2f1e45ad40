"""The backend seam: everything bpfsys asks of a kernel goes through one `Backend`.

Theory of operation
-------------------
A backend takes the *raw ABI*: a `union bpf_attr` image whose pointer fields are real addresses
in this process, a `struct perf_event_attr` image, ioctl numbers and integers. It returns what
the kernel returns and writes back what the kernel writes back (into the attr image and into
memory the attr points to). Every failure is an `OSError` whose `errno` is the kernel's; nothing
else escapes a backend.

Two implementations exist: `LiveBackend` here (ctypes over syscall(2), ioctl(2), mmap(2) and
plain files) and `kernelsim.SimBackend` (the simulated kernel). Wrappers (recording, fault
injection) are plain delegating objects.

The backend in force is held in a `ContextVar`: `use_backend(b)` sets it for a `with` block,
`current_backend()` reads it and defaults to one shared `LiveBackend`.
"""

from __future__ import annotations

import ctypes
import errno
import mmap as _mmap
import os
import platform
import select
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol, TypeAlias, runtime_checkable

WritableBuffer: TypeAlias = (
    "bytearray | memoryview | ctypes.Array[Any] | ctypes.Structure | ctypes.Union"
)
"""A writable, contiguous buffer: the attr image handed to a backend."""


@runtime_checkable
class Mapping(Protocol):
    """A shared memory mapping of an fd: supports the buffer protocol, `len()` and `close()`."""

    def __len__(self) -> int: ...

    def __buffer__(self, flags: int, /) -> memoryview: ...

    def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...


class Backend(Protocol):
    """What bpfsys needs of a kernel. See the module docstring for the rules."""

    def bpf(self, cmd: int, attr: WritableBuffer, size: int) -> int: ...

    def perf_event_open(
        self, attr: WritableBuffer, pid: int, cpu: int, group_fd: int, flags: int
    ) -> int: ...

    def ioctl(self, fd: int, request: int, arg: int) -> int: ...

    def mmap(self, fd: int, length: int, prot: int, flags: int, offset: int) -> Mapping: ...

    def munmap(self, mapping: Mapping) -> None: ...

    def close(self, fd: int) -> None: ...

    def read_file(self, path: str) -> bytes: ...

    def write_file(self, path: str, data: bytes) -> None: ...

    def poll(self, fds: Sequence[int], timeout_ms: int) -> list[int]: ...


# Syscall numbers by machine (uname -m): (bpf, perf_event_open, ioctl).
SYSCALL_NUMBERS: dict[str, tuple[int, int, int]] = {
    "x86_64": (321, 298, 16),
    "aarch64": (280, 241, 29),
}

POLL_READABLE = select.POLLIN | select.POLLRDNORM | select.POLLHUP | select.POLLERR


def buffer_address(buf: WritableBuffer) -> int:
    """The address of a writable buffer's first byte (the buffer must stay alive while used)."""
    if isinstance(buf, ctypes.Structure | ctypes.Union | ctypes.Array):
        return ctypes.addressof(buf)
    view = memoryview(buf)
    if view.readonly:
        raise TypeError("the attr buffer must be writable")
    if view.nbytes == 0:
        return 0
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def buffer_size(buf: WritableBuffer) -> int:
    """The size in bytes of a buffer as a backend sees it."""
    if isinstance(buf, ctypes.Structure | ctypes.Union | ctypes.Array):
        return ctypes.sizeof(buf)
    return memoryview(buf).nbytes


def poll_readable(fds: Sequence[int], timeout_ms: int) -> list[int]:
    """`select()`-style readability of real fds, in the order given (negative timeout: forever)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN | select.POLLRDNORM)
    while True:
        try:
            events = poller.poll(None if timeout_ms < 0 else timeout_ms)
            break
        except InterruptedError:
            continue
    ready = {fd for fd, revents in events if revents & POLL_READABLE}
    return [fd for fd in fds if fd in ready]


class LiveBackend:
    """The running kernel, through ctypes. Needs privilege for most bpf() commands."""

    def __init__(self) -> None:
        machine = platform.machine()
        if machine not in SYSCALL_NUMBERS:
            raise OSError(errno.ENOSYS, f"bpfsys: no syscall numbers for machine {machine!r}")
        self._nr_bpf, self._nr_perf_event_open, _ = SYSCALL_NUMBERS[machine]
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._ioctl = libc.ioctl
        self._ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]
        self._ioctl.restype = ctypes.c_int

    @staticmethod
    def _check(result: int) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return result

    def bpf(self, cmd: int, attr: WritableBuffer, size: int) -> int:
        if size > buffer_size(attr):
            raise OSError(errno.EFAULT, "attr buffer smaller than size")
        return self._check(
            self._syscall(
                ctypes.c_long(self._nr_bpf),
                ctypes.c_long(cmd),
                ctypes.c_void_p(buffer_address(attr)),
                ctypes.c_ulong(size),
            )
        )

    def perf_event_open(
        self, attr: WritableBuffer, pid: int, cpu: int, group_fd: int, flags: int
    ) -> int:
        return self._check(
            self._syscall(
                ctypes.c_long(self._nr_perf_event_open),
                ctypes.c_void_p(buffer_address(attr)),
                ctypes.c_int(pid),
                ctypes.c_int(cpu),
                ctypes.c_int(group_fd),
                ctypes.c_ulong(flags),
            )
        )

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        return self._check(self._ioctl(fd, request, arg))

    def mmap(self, fd: int, length: int, prot: int, flags: int, offset: int) -> Mapping:
        if length <= 0 or offset < 0:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        try:
            return _mmap.mmap(fd, length, flags=flags, prot=prot, offset=offset)
        except (ValueError, OverflowError) as exc:
            raise OSError(errno.EINVAL, str(exc)) from None

    def munmap(self, mapping: Mapping) -> None:
        try:
            mapping.close()
        except BufferError as exc:
            raise OSError(errno.EBUSY, f"mapping still in use: {exc}") from None

    def close(self, fd: int) -> None:
        os.close(fd)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def write_file(self, path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def poll(self, fds: Sequence[int], timeout_ms: int) -> list[int]:
        return poll_readable(fds, timeout_ms)


class DelegatingBackend:
    """A backend that forwards every call to `inner`: the base of wrappers (recording, fault
    injection, tracing), which override only the calls they watch."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    def bpf(self, cmd: int, attr: WritableBuffer, size: int) -> int:
        return self.inner.bpf(cmd, attr, size)

    def perf_event_open(
        self, attr: WritableBuffer, pid: int, cpu: int, group_fd: int, flags: int
    ) -> int:
        return self.inner.perf_event_open(attr, pid, cpu, group_fd, flags)

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        return self.inner.ioctl(fd, request, arg)

    def mmap(self, fd: int, length: int, prot: int, flags: int, offset: int) -> Mapping:
        return self.inner.mmap(fd, length, prot, flags, offset)

    def munmap(self, mapping: Mapping) -> None:
        self.inner.munmap(mapping)

    def close(self, fd: int) -> None:
        self.inner.close(fd)

    def read_file(self, path: str) -> bytes:
        return self.inner.read_file(path)

    def write_file(self, path: str, data: bytes) -> None:
        self.inner.write_file(path, data)

    def poll(self, fds: Sequence[int], timeout_ms: int) -> list[int]:
        return self.inner.poll(fds, timeout_ms)


_current: ContextVar[Backend | None] = ContextVar("bpfsys_backend", default=None)


_default: Backend | None = None

BACKEND_ENV = "BPFSYS_BACKEND"
"""Names the default backend: `live` (the default), `sim` with options, as
`sim:kernel=5.4,cpus=4`, `record:PATH` or `replay:PATH` (see `backend_from_spec`)."""


def backend_from_spec(spec: str) -> Backend:
    """A backend from its text form. ValueError for anything else.

    * `live`;
    * `sim[:key=value,...]`: the keys are KernelConfig fields (`kernel` is short for `version`);
    * `record:PATH[;INNER]`: the INNER backend (a spec, default `live`) recording every call to
      the scenario file PATH (`kernelsim.scenario.RecordingBackend`), closed at interpreter
      exit; PATH cannot contain ";";
    * `replay:PATH`: the scenario file PATH served with no kernel
      (`kernelsim.scenario.ReplayBackend`); at interpreter exit it checks that every recorded
      call was made."""
    kind, _, options = spec.strip().partition(":")
    if kind == "live" and not options:
        return LiveBackend()
    if kind in ("record", "replay") and options:
        return _scenario_backend(kind, options)
    if kind == "sim":
        from kernelsim import Kernel, KernelConfig, SimBackend

        config: dict[str, Any] = {}
        for item in filter(None, options.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"{BACKEND_ENV}: option {item!r} is not key=value")
            key = "version" if key == "kernel" else key
            config[key] = int(value) if value.lstrip("-").isdigit() and key != "version" else value
        try:
            return SimBackend(Kernel(KernelConfig(**config)))
        except TypeError as exc:
            raise ValueError(f"{BACKEND_ENV}: {exc}") from None
    raise ValueError(
        f"{BACKEND_ENV}: unknown backend {spec!r} "
        "(expected live, sim[:options], record:PATH[;inner] or replay:PATH)"
    )


RECORD_SOURCE_ENV = "KERNELSIM_RECORD_SOURCE"
"""What a `record:` backend writes as the scenario's source (the recorded command)."""


def _scenario_backend(kind: str, options: str) -> Backend:
    """`record:PATH[;INNER]` or `replay:PATH` (see `backend_from_spec`)."""
    import atexit

    from kernelsim.scenario import RecordingBackend, ReplayBackend, ScenarioError

    if kind == "record":
        path, _, inner = options.partition(";")
        source = os.environ.get(RECORD_SOURCE_ENV)
        recorder = RecordingBackend(backend_from_spec(inner or "live"), path, source=source)
        atexit.register(recorder.close_recording)
        return recorder
    try:
        replay = ReplayBackend(options)
    except ScenarioError as exc:
        raise ValueError(f"{BACKEND_ENV}: {exc}") from None
    atexit.register(replay.finish)
    return replay


def current_backend() -> Backend:
    """The backend in force: the one set by `use_backend`, else the default one, made once
    from $BPFSYS_BACKEND (a `LiveBackend` when it is unset)."""
    global _default
    backend = _current.get()
    if backend is not None:
        return backend
    if _default is None:
        _default = backend_from_spec(os.environ.get(BACKEND_ENV, "live"))
    return _default


@contextmanager
def use_backend(backend: Backend) -> Iterator[Backend]:
    """Make `backend` the current one inside the `with` block (per thread and asyncio task)."""
    token = _current.set(backend)
    try:
        yield backend
    finally:
        _current.reset(token)
