"""`ReplayBackend`: a recording served to the code under test, with no kernel at all.

Theory of operation
-------------------
The file is loaded and checked whole when the backend is made (ScenarioError otherwise). Each
call the code makes is encoded exactly as the recorder encodes calls and compared with the next
recorded call (strict order). When they differ, `ScenarioDivergence` (not an OSError) is raised
with both calls decoded, before anything of the recorded result is applied; the replay cannot go
on from there, so every later call raises that same divergence again, and so does `finish()`
(code that swallowed it still fails). When they match, the
recorded results are applied: the attr fields and memory the kernel wrote are written into the
caller's memory, then the recorded return value is returned or the recorded errno raised as
OSError.

Fds: each fd the recording returned is a fresh eventfd of this process (so it is a real,
unique, pollable, closable number), bound to the recorded symbol; closing it closes the eventfd.
Object ids, tracepoint ids and PMU types are invented from their symbols (``@map3`` is 3).
Mappings: mmap returns an anonymous mapping of the recorded length; every ``ring`` event writes
its recorded bytes into it at its point in the recording (before the call it precedes, after
the call it follows), so the consumer finds what the recorded one found. Steps and expectations
are skipped (no kernel). `finish()` checks that the code made every recorded call.

`recorded_pid` is the pid the recorded kernel saw the calls come from (the header's ``pid``):
what a test compares its results with where the recorded kernel wrote a pid (the keys of a
per-process counter map).
"""

from __future__ import annotations

import contextlib
import errno
import mmap as _mmap
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from bpfsys.backend import Mapping, WritableBuffer
from kernelsim.scenario.against import compare
from kernelsim.scenario.calls import (
    CallCodec,
    Pending,
    errno_value,
    map_info_of,
    object_info,
    request_of,
)
from kernelsim.scenario.errors import ScenarioDivergence
from kernelsim.scenario.files import decode_content, encode_path
from kernelsim.scenario.format import CALLS_WITH_RESULT, Event, Scenario, load_scenario
from kernelsim.scenario.rings import apply_ranges
from kernelsim.scenario.symbols import FdInfo, SymbolTable
from kernelsim.usermem import ProcessMemory


class ReplayBackend:
    """A Backend that serves the scenario at `path` (see the module docstring)."""

    def __init__(self, scenario: str | os.PathLike[str] | Scenario) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.symbols = SymbolTable(invent=True)
        self.codec = CallCodec(self.symbols, ProcessMemory(), self.scenario.possible_cpus)
        self._events = self.scenario.events
        self._next = 0
        self._mappings: dict[str, Any] = {}
        self._mapping_names: dict[int, str] = {}
        self._lock = threading.RLock()
        self.divergence: ScenarioDivergence | None = None
        """The first divergence, once the code made another call than the recording."""

    @property
    def path(self) -> str:
        return self.scenario.path

    @property
    def recorded_pid(self) -> int | None:
        """The pid the recorded calls came from (None: a recording made before pids were)."""
        pid = self.scenario.header.get("pid")
        return pid if isinstance(pid, int) and not isinstance(pid, bool) else None

    # -- the recording ------------------------------------------------------------------------
    def _apply_rings(self) -> None:
        """Apply the ring events (and skip the steps and expectations) up to the next call."""
        while (
            self._next < len(self._events) and self._events[self._next].op not in CALLS_WITH_RESULT
        ):
            event = self._events[self._next].data
            if event["op"] == "ring":
                mapping = self._mappings.get(str(event["mapping"]))
                if mapping is not None and not mapping.closed:
                    apply_ranges(mapping, event["bytes"])
            self._next += 1

    def _diverged(self, divergence: ScenarioDivergence) -> ScenarioDivergence:
        """Remember the first divergence; what to raise now (always the first)."""
        if self.divergence is None:
            self.divergence = divergence
        return self.divergence

    def _expect(self, actual: dict[str, Any]) -> Event:
        """The next recorded call, which must be `actual`; ScenarioDivergence otherwise."""
        if self.divergence is not None:
            raise self.divergence
        self._apply_rings()
        if self._next >= len(self._events):
            last = self._events[-1].line if self._events else 1
            ended = ScenarioDivergence(self.path, last, None, actual, "the recording has ended")
            raise self._diverged(ended)
        event = self._events[self._next]
        expected = request_of(event.data)
        if compare(expected, actual):
            raise self._diverged(ScenarioDivergence(self.path, event.line, expected, actual))
        self._next += 1
        return event

    def _after(self) -> None:
        """Apply the "after" ring events that follow the call just served."""
        while self._next < len(self._events):
            event = self._events[self._next].data
            if event["op"] != "ring" or event["when"] != "after":
                return
            mapping = self._mappings.get(str(event["mapping"]))
            if mapping is not None and not mapping.closed:
                apply_ranges(mapping, event["bytes"])
            self._next += 1

    def _new_fd(self, symbol: str, info: FdInfo) -> int:
        fd = os.eventfd(0, os.EFD_CLOEXEC)
        self.symbols.new_fd(fd, info, symbol)
        return fd

    def _serve(self, pending: Pending, info: Callable[[dict[str, Any]], FdInfo] | None) -> int:
        event = self._expect(pending.event).data
        self.codec.apply(pending, event)
        self._after()
        if "errno" in event:
            err = errno_value(event["errno"])
            raise OSError(err, os.strerror(err) if err != 524 else "ENOTSUPP")
        ret = event.get("ret")
        if isinstance(ret, str) and ret.startswith("$"):
            if "object" in event:
                found = object_info(event["object"])
            elif info is not None:
                found = info(event)
            else:
                found = FdInfo(ret.strip("$0123456789"))
            return self._new_fd(ret, found)
        return int(ret) if isinstance(ret, int) else 0

    # -- the backend calls --------------------------------------------------------------------
    def bpf(self, cmd: int, attr: WritableBuffer, size: int) -> int:
        with self._lock:
            pending = self.codec.bpf_request(cmd, attr, size)

            def info(event: dict[str, Any]) -> FdInfo:
                if event.get("cmd") == "MAP_CREATE" and isinstance(event.get("attr"), dict):
                    return map_info_of(event["attr"])
                return FdInfo(pending.fd_kind or "obj")

            return self._serve(pending, info)

    def perf_event_open(
        self, attr: WritableBuffer, pid: int, cpu: int, group_fd: int, flags: int
    ) -> int:
        with self._lock:
            pending = self.codec.perf_open_request(attr, pid, cpu, group_fd, flags)
            new_info = pending.new_info or FdInfo("perf")
            return self._serve(pending, lambda event: new_info)

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        with self._lock:
            return self._serve(self.codec.ioctl_request(fd, request, arg), None)

    def mmap(self, fd: int, length: int, prot: int, flags: int, offset: int) -> Mapping:
        with self._lock:
            event = self._expect(self.codec.mmap_request(fd, length, prot, flags, offset).event)
            data = event.data
            if "errno" in data:
                err = errno_value(data["errno"])
                raise OSError(err, os.strerror(err))
            mapping = _mmap.mmap(-1, length)
            name = str(data["ret"])
            self._mappings[name] = mapping
            self._mapping_names[id(mapping)] = name
            self._after()
            return mapping

    def munmap(self, mapping: Mapping) -> None:
        with self._lock:
            name = self._mapping_names.get(id(mapping), "%unknown")
            event = self._expect({"op": "munmap", "mapping": name}).data
            if "errno" in event:
                err = errno_value(event["errno"])
                raise OSError(err, os.strerror(err))
            try:
                mapping.close()
            except BufferError as exc:
                raise OSError(errno.EBUSY, f"mapping still in use: {exc}") from None
            self._mappings.pop(name, None)
            self._after()

    def close(self, fd: int) -> None:
        with self._lock:
            event = self._expect({"op": "close", "fd": self.codec.fd_json(fd)}).data
            if "errno" in event:
                err = errno_value(event["errno"])
                raise OSError(err, os.strerror(err))
            if self.symbols.close_fd(fd) is not None:
                os.close(fd)
            self._after()

    def read_file(self, path: str) -> bytes:
        with self._lock:
            request = {"op": "read_file", "path": encode_path(path, self.symbols)}
            event = self._expect(request).data
            if "errno" in event:
                err = errno_value(event["errno"])
                raise OSError(err, os.strerror(err))
            data = decode_content(event["content"], self.symbols)
            self._after()
            return data

    def write_file(self, path: str, data: bytes) -> None:
        with self._lock:
            from kernelsim.scenario.files import encode_content

            request = {
                "op": "write_file",
                "path": encode_path(path, self.symbols),
                "data": encode_content("", bytes(data), self.symbols),
            }
            event = self._expect(request).data
            self._after()
            if "errno" in event:
                err = errno_value(event["errno"])
                raise OSError(err, os.strerror(err))

    def poll(self, fds: Sequence[int], timeout_ms: int) -> list[int]:
        with self._lock:
            request = {
                "op": "poll",
                "fds": [self.codec.fd_json(fd) for fd in fds],
                "timeout_ms": timeout_ms,
            }
            event = self._expect(request).data
            if "errno" in event:
                err = errno_value(event["errno"])
                raise OSError(err, os.strerror(err))
            ready = [self.codec.fd_value(name) for name in event.get("ret", [])]
            self._after()
            return ready

    # -- the end ------------------------------------------------------------------------------
    def finish(self) -> None:
        """Check that the code never diverged and made every recorded call (ScenarioDivergence:
        the divergence, or naming the first call left), then close what the replay still
        holds."""
        with self._lock:
            try:
                if self.divergence is not None:
                    raise self.divergence
                self._apply_rings()
                if self._next < len(self._events):
                    event = self._events[self._next]
                    raise ScenarioDivergence(
                        self.path,
                        event.line,
                        request_of(event.data),
                        {"op": "nothing more (the code finished)"},
                    )
            finally:
                self.release()

    def release(self) -> None:
        """Close the eventfds and mappings the replay holds; idempotent."""
        for fd in self.symbols.open_fds().values():
            with contextlib.suppress(OSError):
                os.close(fd)
            self.symbols.close_fd(fd)
        for mapping in self._mappings.values():
            with contextlib.suppress(BufferError):
                mapping.close()
        self._mappings.clear()


__all__ = ["ReplayBackend"]
