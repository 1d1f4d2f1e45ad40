"""`RecordingBackend`: any backend, with every call written to a scenario file.

Theory of operation
-------------------
A `DelegatingBackend`: each call goes to the inner backend unchanged, and what the code under
test gets back (return value, exception, bytes written into its memory) is exactly what the
inner backend gave; the recorder only reads. Per call, in order:

1. snapshot the live mappings ("before" ring events, `kernelsim.scenario.rings`);
2. encode the request (`CallCodec`): the attr by field name, the memory its pointers reach;
3. make the call on the inner backend;
4. encode the results: return value or errno, the attr fields and memory the kernel wrote; a new
   fd gets its symbol, and when the request does not tell what it is (OBJ_GET, *_GET_FD_BY_ID)
   the recorder asks (`learn`) -- a question that changes nothing and is not recorded;
5. write the event; snapshot the mappings again ("after").

Two seams let the recorder stand where the code's memory and fds are not its own:

* `memory` (a `kernelsim.usermem.UserMemory`): where the pointers of a call point. By default
  this process (`ProcessMemory`); `kernelsim exec` passes the traced program's memory.
* `learn(fd, kind)`: what a new fd is. By default its fdinfo read through the inner backend
  (`kernelsim.scenario.learn.learn_fd`); `kernelsim exec` asks its fd table for the object it
  is about to hand over.

And where a supervisor hands the new fds to a traced program (`stand_in_fds=True`), the fd a
call returns is a stand-in: the recorder names it at once and binds the program's number when
told (`fd_delivered`); `fd_undelivered` and `fd_closed` write the close of an fd that the
program never got or closed itself (no call of this backend does it).

The header records the inner kernel's profile, read through the inner backend when the recorder
is made (osrelease, possible and online CPUs, the page size), and ``pid``: the process id the
recorded kernel saw the calls come from (this process on the live kernel, the simulated task's
pid on the simulator), which a replay needs where a test finds its own pid in the results (map
keys of per-process counters). `close()` writes the end marker; a recording that was never
closed is refused as truncated when read.
"""

from __future__ import annotations

import contextlib
import mmap as _mmap
import os
import platform
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import attrs

from bpfsys.backend import Backend, DelegatingBackend, LiveBackend, Mapping, WritableBuffer
from bpfsys.bpf import parse_cpu_list
from bpfsys.kversion import KernelVersion
from kernelsim.scenario.calls import CallCodec, Learn, Pending, errno_of
from kernelsim.scenario.files import encode_content, encode_length, encode_path
from kernelsim.scenario.format import ScenarioWriter
from kernelsim.scenario.learn import learn_fd
from kernelsim.scenario.rings import changed_ranges
from kernelsim.scenario.symbols import SymbolTable
from kernelsim.usermem import ProcessMemory, UserMemory


@attrs.define
class _Mapped:
    symbol: str
    mapping: Mapping
    seen: bytes


def _count(text: str) -> int:
    cpus = parse_cpu_list(text)
    return max(cpus) + 1 if cpus else 1


def kernel_profile(backend: Backend) -> dict[str, Any]:
    """The profile of the backend's kernel, as a scenario header records it."""
    profile: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        release = backend.read_file("/proc/sys/kernel/osrelease").decode().strip()
        profile["release"] = release
        profile["version"] = str(KernelVersion.parse(release))
    for name, path in (("possible_cpus", "possible"), ("online_cpus", "online")):
        with contextlib.suppress(OSError, ValueError):
            text = backend.read_file(f"/sys/devices/system/cpu/{path}").decode()
            profile[name] = _count(text) if name == "possible_cpus" else len(parse_cpu_list(text))
    kernel = getattr(backend, "kernel", None)
    config = getattr(kernel, "config", None)
    profile["page_size"] = int(getattr(config, "page_size", _mmap.PAGESIZE))
    profile["machine"] = platform.machine()
    return profile


def caller_pid(backend: Backend) -> int:
    """The pid the backend's kernel sees calls come from: the simulated task's (its config's
    pid) on a simulator, this process's otherwise."""
    config = getattr(getattr(backend, "kernel", None), "config", None)
    pid = getattr(config, "pid", None)
    return pid if isinstance(pid, int) else os.getpid()


def backend_name(backend: Backend) -> str:
    if isinstance(backend, LiveBackend):
        return "live"
    if hasattr(backend, "kernel"):
        return "sim"
    return type(backend).__name__


class RecordingBackend(DelegatingBackend):
    """Delegates to `inner` and records every call to the scenario file `path`."""

    def __init__(
        self,
        inner: Backend,
        path: str | os.PathLike[str],
        *,
        source: str | None = None,
        memory: UserMemory | None = None,
        learn: Learn | None = None,
        stand_in_fds: bool = False,
    ) -> None:
        super().__init__(inner)
        self.profile = kernel_profile(inner)
        header: dict[str, Any] = {
            "kernel": self.profile,
            "recorded_on": backend_name(inner),
            "pid": caller_pid(inner),
        }
        if source is not None:
            header["source"] = source
        self.symbols = SymbolTable(stand_ins=stand_in_fds)
        self.codec = CallCodec(
            self.symbols,
            ProcessMemory() if memory is None else memory,
            int(self.profile.get("possible_cpus", 1)),
        )
        self._learn: Learn = learn or (lambda fd, kind: learn_fd(self.inner, fd, kind))
        self._mapped: dict[int, _Mapped] = {}
        self._lock = threading.RLock()
        self._writer = ScenarioWriter(path, header)

    @property
    def path(self) -> str:
        return self._writer.path

    # -- bookkeeping --------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        if not self._writer.closed:
            self._writer.write(event)

    def _snapshot(self, when: str) -> None:
        for mapped in list(self._mapped.values()):
            if mapped.mapping.closed:
                continue
            with memoryview(mapped.mapping) as view:
                now = bytes(view)
            ranges = changed_ranges(mapped.seen, now)
            if ranges:
                mapped.seen = now
                self._emit({"op": "ring", "mapping": mapped.symbol, "when": when, "bytes": ranges})

    def _call(self, pending: Pending, run: Callable[[], int]) -> int:
        try:
            ret = run()
        except OSError as exc:
            self._emit({**pending.event, **self.codec.result(pending, None, exc, self._learn)})
            self._snapshot("after")
            raise
        self._emit({**pending.event, **self.codec.result(pending, ret, None, self._learn)})
        self._snapshot("after")
        return ret

    def _plain(self, event: dict[str, Any], run: Callable[[], Any]) -> Any:
        """A call whose result needs no codec (close, munmap, write_file)."""
        try:
            result = run()
        except OSError as exc:
            self._emit({**event, "errno": errno_of(exc.errno or 0)})
            self._snapshot("after")
            raise
        self._emit(event)
        self._snapshot("after")
        return result

    # -- the backend calls --------------------------------------------------------------------
    def bpf(self, cmd: int, attr: WritableBuffer, size: int) -> int:
        with self._lock:
            self._snapshot("before")
            pending = self.codec.bpf_request(cmd, attr, size)
            return self._call(pending, lambda: self.inner.bpf(cmd, attr, size))

    def perf_event_open(
        self, attr: WritableBuffer, pid: int, cpu: int, group_fd: int, flags: int
    ) -> int:
        with self._lock:
            self._snapshot("before")
            pending = self.codec.perf_open_request(attr, pid, cpu, group_fd, flags)
            return self._call(
                pending, lambda: self.inner.perf_event_open(attr, pid, cpu, group_fd, flags)
            )

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        with self._lock:
            self._snapshot("before")
            pending = self.codec.ioctl_request(fd, request, arg)
            return self._call(pending, lambda: self.inner.ioctl(fd, request, arg))

    def mmap(self, fd: int, length: int, prot: int, flags: int, offset: int) -> Mapping:
        with self._lock:
            self._snapshot("before")
            event = self.codec.mmap_request(fd, length, prot, flags, offset).event
            try:
                mapping = self.inner.mmap(fd, length, prot, flags, offset)
            except OSError as exc:
                self._emit({**event, "errno": errno_of(exc.errno or 0)})
                raise
            symbol = self.symbols.new_mapping()
            self._emit({**event, "ret": symbol})
            self._mapped[id(mapping)] = _Mapped(symbol, mapping, b"")
            self._snapshot("after")
            return mapping

    def munmap(self, mapping: Mapping) -> None:
        with self._lock:
            self._snapshot("before")
            mapped = self._mapped.get(id(mapping))
            name = mapped.symbol if mapped is not None else "%unknown"
            self._plain({"op": "munmap", "mapping": name}, lambda: self.inner.munmap(mapping))
            self._mapped.pop(id(mapping), None)

    def close(self, fd: int) -> None:
        with self._lock:
            self._snapshot("before")
            event = {"op": "close", "fd": self.codec.fd_json(fd)}
            self._plain(event, lambda: self.inner.close(fd))
            self.symbols.close_fd(fd)

    def read_file(self, path: str) -> bytes:
        with self._lock:
            self._snapshot("before")
            event: dict[str, Any] = {"op": "read_file", "path": encode_path(path, self.symbols)}
            try:
                data = self.inner.read_file(path)
            except OSError as exc:
                self._emit({**event, "errno": errno_of(exc.errno or 0)})
                raise
            content = encode_content(path, data, self.symbols)
            self._emit({**event, "ret": encode_length(path, data), "content": content})
            return data

    def write_file(self, path: str, data: bytes) -> None:
        with self._lock:
            self._snapshot("before")
            event = {
                "op": "write_file",
                "path": encode_path(path, self.symbols),
                "data": encode_content("", bytes(data), self.symbols),
            }
            self._plain(event, lambda: self.inner.write_file(path, data))

    def poll(self, fds: Sequence[int], timeout_ms: int) -> list[int]:
        with self._lock:
            self._snapshot("before")
            event: dict[str, Any] = {
                "op": "poll",
                "fds": [self.codec.fd_json(fd) for fd in fds],
                "timeout_ms": timeout_ms,
            }
            try:
                ready = self.inner.poll(fds, timeout_ms)
            except OSError as exc:
                self._emit({**event, "errno": errno_of(exc.errno or 0)})
                raise
            self._emit({**event, "ret": [self.codec.fd_json(fd) for fd in ready]})
            self._snapshot("after")
            return ready

    # -- fds handed over by a supervisor (stand_in_fds) ---------------------------------------
    def fd_delivered(self, stand_in: int, fd: int) -> None:
        """The new fd the inner backend returned as `stand_in` is the program's `fd` now."""
        with self._lock:
            self.symbols.deliver(stand_in, fd)

    def fd_undelivered(self, stand_in: int) -> None:
        """The new fd returned as `stand_in` never reached the program: its close."""
        with self._lock:
            name = self.symbols.withdraw(stand_in)
            if name is not None:
                self._snapshot("before")
                self._emit({"op": "close", "fd": name})

    def fd_closed(self, fd: int) -> None:
        """The program closed `fd` itself (no call of this backend): its close, when the
        recording named it."""
        with self._lock:
            name = self.symbols.fd_symbol(fd)
            if name is not None:
                self._snapshot("before")
                self._emit({"op": "close", "fd": name})
                self.symbols.close_fd(fd)

    # -- lifetime -----------------------------------------------------------------------------
    def close_recording(self) -> None:
        """Snapshot the mappings a last time and write the end marker; idempotent."""
        with self._lock:
            if not self._writer.closed:
                self._snapshot("before")
                self._writer.close()

    def __enter__(self) -> RecordingBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_recording()


__all__ = ["RecordingBackend", "caller_pid", "kernel_profile"]
