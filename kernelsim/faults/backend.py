"""`FaultBackend`: a delegating backend that fails calls as a `FaultPlan` says.

Theory of operation
-------------------
Every call is described as a `Call`, logged as a `CallRecord` (with the Python frames it came
from, innermost first, outside this package) and decided by the plan's `Injector`. A call a
rule fires on raises ``OSError(rule.errno)`` -- an `InterruptedError` for EINTR -- whose text
says it was injected, and never reaches the inner backend; every other call is passed on.
One exception, as close(2) on Linux: a failed close still releases the fd, so a close that a
rule fires on is passed on first and then fails.

Ring rules act in the simulated kernel: when the inner backend is (or wraps) a `SimBackend`,
every perf ring mapped through this backend gets the `kernelsim.faults.ring` shim, and all of
them share the plan's one `RingInjector`. A plan with ring rules over any other backend is a
ValueError.

With the empty plan (the default) the backend only counts and logs: the counting run of the
exhaustive mode.
"""

from __future__ import annotations

import functools
import os
import sys
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Final

import attrs

from bpfsys.backend import Backend, DelegatingBackend, Mapping, WritableBuffer
from kernelsim.faults.plan import (
    NO_FAULTS,
    Call,
    FaultPlan,
    FaultRule,
    Injector,
    RingInjector,
    Syscall,
    errno_name,
)
from kernelsim.kernel import Kernel

__all__ = ["CallRecord", "FaultBackend", "Frame", "sim_kernel_of"]

STACK_DEPTH: Final = 6
"""Frames kept per call."""
_PACKAGE_DIR: Final = str(Path(__file__).resolve().parent)
_PROJECT_DIR: Final = Path(__file__).resolve().parents[2]
_SKIPPED_FILES: Final = ("contextlib.py",)


@functools.cache
def _project_relative(filename: str) -> str:
    path = Path(filename).resolve()
    return str(path.relative_to(_PROJECT_DIR)) if path.is_relative_to(_PROJECT_DIR) else filename


@attrs.frozen
class Frame:
    """One Python frame: file (relative to the project when inside it), line, function (its
    qualified name, as "PerfBuffer.open")."""

    file: str
    line: int
    function: str

    @classmethod
    def of(cls, frame: FrameType, line: int | None = None) -> Frame:
        """`frame` at `line` (default: its current line)."""
        file = _project_relative(frame.f_code.co_filename)
        return cls(file, frame.f_lineno if line is None else line, frame.f_code.co_qualname)

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"


def _stack(frame: FrameType | None) -> tuple[Frame, ...]:
    """Up to STACK_DEPTH frames from `frame` outwards, skipping this package and contextlib,
    and stopping where this package is met again (the exhaustive runner)."""
    frames: list[Frame] = []
    while frame is not None and len(frames) < STACK_DEPTH:
        file = frame.f_code.co_filename
        if file.startswith(_PACKAGE_DIR):
            if frames:
                break
        elif not file.endswith(_SKIPPED_FILES):
            frames.append(Frame.of(frame))
        frame = frame.f_back
    return tuple(frames)


@attrs.frozen
class CallRecord:
    """A call the fault backend saw: its number in the run (from 0), what it was, where it came
    from (innermost frame first) and the rule that failed it, if any."""

    index: int
    call: Call
    stack: tuple[Frame, ...]
    injected: FaultRule | None = None

    @property
    def where(self) -> str:
        """The call chain, innermost first: "bpfsys/bpf.py:12 in _bpf <- ..."."""
        return " <- ".join(str(frame) for frame in self.stack) or "?"


def sim_kernel_of(backend: Backend) -> Kernel | None:
    """The simulated kernel under `backend` (through `inner` of delegating wrappers), if any."""
    seen: Backend | None = backend
    while seen is not None:
        kernel = getattr(seen, "kernel", None)
        if isinstance(kernel, Kernel):
            return kernel
        seen = getattr(seen, "inner", None)
    return None


class FaultBackend(DelegatingBackend):
    """Delegates to `inner`, failing what `plan` says (module docstring). `calls` logs every
    call, `injected` the ones that were failed."""

    def __init__(self, inner: Backend, plan: FaultPlan = NO_FAULTS) -> None:
        super().__init__(inner)
        self.plan = plan
        self.calls: list[CallRecord] = []
        self._injector = Injector(plan.rules)
        self._ring_injector = RingInjector(plan.ring)
        self._hooked: weakref.WeakSet[object] = weakref.WeakSet()
        self._kernel = sim_kernel_of(inner)
        if plan.ring and self._kernel is None:
            raise ValueError("ring rules act in the simulated kernel: inner is no SimBackend")

    @property
    def injected(self) -> list[CallRecord]:
        return [record for record in self.calls if record.injected is not None]

    def _decide(self, call: Call) -> CallRecord:
        rule = self._injector.decide(call)
        record = CallRecord(len(self.calls), call, _stack(sys._getframe(1)), rule)
        self.calls.append(record)
        return record

    @staticmethod
    def _error(record: CallRecord) -> OSError:
        assert record.injected is not None
        err = record.injected.errno
        return OSError(
            err, f"{os.strerror(err)}: injected {errno_name(err)} on call #{record.index}"
        )

    def _enter(self, call: Call) -> None:
        record = self._decide(call)
        if record.injected is not None:
            raise self._error(record)

    def _hook_ring(self, fd: int) -> None:
        from kernelsim.faults.ring import hook_ring
        from kernelsim.perf.event import PerfEvent

        assert self._kernel is not None
        event = self._kernel.fds.lookup(fd)
        rb = event.ring_buffer() if isinstance(event, PerfEvent) else None
        if rb is not None and rb.ring not in self._hooked:
            hook_ring(rb.ring, self._ring_injector.decide)
            self._hooked.add(rb.ring)

    # -- the Backend protocol --------------------------------------------------------------------
    def bpf(self, cmd: int, attr: WritableBuffer, size: int) -> int:
        self._enter(Call(Syscall.BPF, int(cmd)))
        return self.inner.bpf(cmd, attr, size)

    def perf_event_open(
        self, attr: WritableBuffer, pid: int, cpu: int, group_fd: int, flags: int
    ) -> int:
        self._enter(Call(Syscall.PERF_EVENT_OPEN))
        return self.inner.perf_event_open(attr, pid, cpu, group_fd, flags)

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        self._enter(Call(Syscall.IOCTL, request, fd))
        return self.inner.ioctl(fd, request, arg)

    def mmap(self, fd: int, length: int, prot: int, flags: int, offset: int) -> Mapping:
        self._enter(Call(Syscall.MMAP, fd=fd))
        mapping = self.inner.mmap(fd, length, prot, flags, offset)
        if self.plan.ring:
            self._hook_ring(fd)
        return mapping

    def munmap(self, mapping: Mapping) -> None:
        self._enter(Call(Syscall.MUNMAP))
        self.inner.munmap(mapping)

    def close(self, fd: int) -> None:
        record = self._decide(Call(Syscall.CLOSE, fd=fd))
        self.inner.close(fd)
        if record.injected is not None:
            raise self._error(record)

    def read_file(self, path: str) -> bytes:
        self._enter(Call(Syscall.READ_FILE, path=path))
        return self.inner.read_file(path)

    def write_file(self, path: str, data: bytes) -> None:
        self._enter(Call(Syscall.WRITE_FILE, path=path))
        self.inner.write_file(path, data)

    def poll(self, fds: Sequence[int], timeout_ms: int) -> list[int]:
        self._enter(Call(Syscall.POLL))
        return self.inner.poll(fds, timeout_ms)
