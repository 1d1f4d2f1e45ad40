"""`replay_against`: issue a recorded session again, on another backend, and report each
difference.

Theory of operation
-------------------
The file is loaded and checked whole first (`load_scenario`): a bad file raises ScenarioError
before any call is made. Then, event by event:

* a call is rebuilt from its request (`CallCodec.rebuild_*`: fresh attr bytes, fresh buffers
  holding the recorded memory, symbols turned into this run's fds and ids) and issued on the
  backend; its results are encoded exactly as the recorder encodes them, with each new fd bound
  to the symbol the recording gave it, and compared with the recorded results: return value or
  errno, attr fields written back, memory written. Volatile values compare equal to any value.
  A poll is issued with a zero timeout: a replay never waits.
* a ``ring`` event updates the recorded image of its mapping; a "before" one also plays the
  consumer: the words only the consumer writes (a perf ring's data_tail, a ring buffer's
  consumer_pos) are copied into this run's mapping, as the recorded consumer wrote them. Then
  the mapping's view (`kernelsim.scenario.rings.ring_view`) is compared with the recorded one.
* a ``step`` runs on the simulated kernel (tick, perf_output, fire_tracepoint); on any other
  backend it is a difference ("needs the simulated kernel").
* an ``expect`` is checked against the backend's state now (ring records or lost counts of a
  mapping, the contents of a map).

Whatever the recording left open is closed at the end. The `ReplayReport` lists every event
that differed, with its line and the differing paths, expected and actual.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, Final

import attrs

from bpfsys.abi import DATA_TAIL_OFFSET, PerfIoctl
from bpfsys.backend import Backend, Mapping
from kernelsim.scenario.blob import UNRESOLVED_FD, decode_blob
from kernelsim.scenario.calls import (
    MAP_NAMES,
    PERF_OPEN_FLAGS,
    PROT_NAMES,
    CallCodec,
    EventError,
    Pending,
    errno_of,
    request_of,
    result_of,
    value_of,
)
from kernelsim.scenario.codec import Buffers, CodecError
from kernelsim.scenario.errors import ScenarioError
from kernelsim.scenario.files import decode_path, encode_content, encode_length
from kernelsim.scenario.format import Scenario, load_scenario
from kernelsim.scenario.learn import learn_fd
from kernelsim.scenario.rings import RangeError, apply_ranges, consumer_position, ring_view
from kernelsim.scenario.rules import is_volatile
from kernelsim.scenario.symbols import SymbolTable, is_symbol
from kernelsim.usermem import ProcessMemory

CONSUMER_WORDS: Final[dict[str, tuple[int, int]]] = {
    "perf": (DATA_TAIL_OFFSET, 8),
    "ringbuf_consumer": (0, 8),
}
"""Per mapping kind, the bytes the consumer (not the kernel) writes."""


@attrs.frozen
class Difference:
    """One value that differs: where (a path into the event), what was recorded, what came."""

    path: str
    expected: Any
    actual: Any


@attrs.frozen
class EventResult:
    """One replayed event and its differences (none: it matched)."""

    line: int
    summary: str
    differences: tuple[Difference, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.differences


@attrs.frozen
class ReplayReport:
    """What `replay_against` found: one result per event that was checked."""

    path: str
    backend: str
    results: tuple[EventResult, ...]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def failures(self) -> list[EventResult]:
        return [result for result in self.results if not result.passed]

    def describe(self) -> str:
        """The differences as text, one line per difference."""
        lines = []
        for result in self.failures:
            for diff in result.differences:
                lines.append(
                    f"{self.path}:{result.line}: {result.summary}: {diff.path}: "
                    f"expected {diff.expected!r}, got {diff.actual!r}"
                )
        return "\n".join(lines)


def compare(expected: Any, actual: Any, path: str = "") -> list[Difference]:
    """The differences between two encoded values (a volatile value matches any value, and
    its absence: a volatile field that is zero is not written)."""
    if is_volatile(expected) or is_volatile(actual):
        return []
    if isinstance(expected, dict) and isinstance(actual, dict):
        found: list[Difference] = []
        for key in [*expected, *(k for k in actual if k not in expected)]:
            found += compare(expected.get(key), actual.get(key), f"{path}.{key}" if path else key)
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [Difference(path, expected, actual)]
        found = []
        for index, (left, right) in enumerate(zip(expected, actual, strict=True)):
            found += compare(left, right, f"{path}[{index}]")
        return found
    return [] if expected == actual else [Difference(path, expected, actual)]


def compare_given(expected: Any, actual: Any, path: str = "") -> list[Difference]:
    """As `compare`, but only the keys an expected object gives are compared (expectations
    written by hand leave volatile fields out)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        found: list[Difference] = []
        for key, value in expected.items():
            found += compare_given(value, actual.get(key), f"{path}.{key}" if path else key)
        return found
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        found = []
        for index, (left, right) in enumerate(zip(expected, actual, strict=True)):
            found += compare_given(left, right, f"{path}[{index}]")
        return found
    return compare(expected, actual, path)


def summary(event: dict[str, Any]) -> str:
    """A short name for an event: "bpf MAP_CREATE", "ioctl ENABLE $perf1", "ring %mmap1"."""
    op = str(event.get("op"))
    for key in ("cmd", "request", "step", "path", "mapping", "ring", "map"):
        if key in event:
            extra = f" {event['fd']}" if "fd" in event and key == "request" else ""
            return f"{op} {event[key]}{extra}"
    if "fd" in event:
        return f"{op} {event['fd']}"
    return op


@attrs.define
class _Mapped:
    kind: str
    fd_symbol: Any
    actual: Mapping
    expected: bytearray


class StepUnavailable(Exception):
    """A step the backend cannot take (not the simulator, or the simulator lacks it)."""


class _Replayer:
    def __init__(self, scenario: Scenario, backend: Backend) -> None:
        self.scenario = scenario
        self.backend = backend
        self.symbols = SymbolTable()
        self.codec = CallCodec(self.symbols, ProcessMemory(), scenario.possible_cpus)
        self.recorded = SymbolTable()
        """Ids found in the recorded ring bytes get their symbols here, in the order they come,
        as this run's ids do in `symbols`."""
        self.mapped: dict[str, _Mapped] = {}
        self.extra = 0

    # -- calls --------------------------------------------------------------------------------
    def _expected_symbol(self, recorded: dict[str, Any]) -> str:
        ret = recorded.get("ret")
        if isinstance(ret, str) and ret.startswith("$"):
            return ret
        self.extra += 1
        return f"$extra{self.extra}"

    def _issue(self, event: dict[str, Any], pending: Pending, call: Any) -> list[Difference]:
        recorded = result_of(event)
        differences = [
            d
            for d in compare(request_of(event), pending.event, "request")
            if d.actual != UNRESOLVED_FD  # a symbol this run never bound: reported where made
        ]
        try:
            ret, error = int(call()), None
        except OSError as exc:
            ret, error = None, exc
        except Exception as exc:  # a backend broke its contract: report it, go on
            crash = f"{type(exc).__name__}: {exc} (not an OSError)"
            return [*differences, Difference("ret", recorded, crash)]
        actual = self.codec.result(
            pending,
            ret,
            error,
            lambda fd, kind: learn_fd(self.backend, fd, kind),
            self._expected_symbol(recorded) if pending.fd_kind else None,
        )
        return differences + compare(recorded, actual)

    def bpf(self, event: dict[str, Any]) -> list[Difference]:
        buffers = Buffers()
        cmd, image = self.codec.rebuild_bpf(event, buffers)
        size = int(event["size"])
        pending = self.codec.bpf_request(cmd, image, size)
        return self._issue(event, pending, lambda: self.backend.bpf(cmd, image, size))

    def perf_event_open(self, event: dict[str, Any]) -> list[Difference]:
        buffers = Buffers()
        attr = self.codec.rebuild_perf_attr(event, buffers)
        pid, cpu = int(event["pid"]), int(event["cpu"])
        group = self.codec.fd_value(event["group_fd"])
        flags = value_of(event.get("flags", 0), PERF_OPEN_FLAGS)
        pending = self.codec.perf_open_request(attr, pid, cpu, group, flags)
        return self._issue(
            event, pending, lambda: self.backend.perf_event_open(attr, pid, cpu, group, flags)
        )

    def ioctl(self, event: dict[str, Any]) -> list[Difference]:
        buffers = Buffers()
        fd = self.codec.fd_value(event["fd"])
        name = event["request"]
        request = int(PerfIoctl[name]) if isinstance(name, str) else int(name)
        arg = self.codec.rebuild_ioctl_arg(event, buffers)
        pending = self.codec.ioctl_request(fd, request, arg)
        return self._issue(event, pending, lambda: self.backend.ioctl(fd, request, arg))

    def mmap(self, event: dict[str, Any]) -> list[Difference]:
        fd = self.codec.fd_value(event["fd"])
        length, offset = int(event["length"]), int(event["offset"])
        prot = value_of(event["prot"], PROT_NAMES)
        flags = value_of(event["flags"], MAP_NAMES)
        try:
            mapping = self.backend.mmap(fd, length, prot, flags, offset)
        except OSError as exc:
            return compare(result_of(event), {"errno": errno_of(exc.errno or 0)})
        symbol = event.get("ret")
        if not isinstance(symbol, str):
            self.backend.munmap(mapping)
            return [Difference("ret", event.get("errno"), "a mapping")]
        kind = str(event.get("ring", "raw"))
        self.mapped[symbol] = _Mapped(kind, event["fd"], mapping, bytearray(length))
        return []

    def munmap(self, event: dict[str, Any]) -> list[Difference]:
        mapped = self.mapped.pop(str(event["mapping"]), None)
        if mapped is None:
            return [Difference("mapping", event["mapping"], "no such mapping in this run")]
        try:
            self.backend.munmap(mapped.actual)
        except OSError as exc:
            return compare(result_of(event), {"errno": errno_of(exc.errno or 0)})
        return compare(result_of(event), {})

    def close(self, event: dict[str, Any]) -> list[Difference]:
        fd = self.codec.fd_value(event["fd"])
        try:
            self.backend.close(fd)
        except OSError as exc:
            return compare(result_of(event), {"errno": errno_of(exc.errno or 0)})
        self.symbols.close_fd(fd)
        return compare(result_of(event), {})

    def read_file(self, event: dict[str, Any]) -> list[Difference]:
        path = decode_path(str(event["path"]), self.symbols)
        try:
            data = self.backend.read_file(path)
        except OSError as exc:
            return compare(result_of(event), {"errno": errno_of(exc.errno or 0)})
        content = encode_content(path, data, self.symbols)
        return compare(result_of(event), {"ret": encode_length(path, data), "content": content})

    def write_file(self, event: dict[str, Any]) -> list[Difference]:
        path = decode_path(str(event["path"]), self.symbols)
        data = decode_blob(event["data"], self.symbols)
        try:
            self.backend.write_file(path, data)
        except OSError as exc:
            return compare(result_of(event), {"errno": errno_of(exc.errno or 0)})
        return compare(result_of(event), {})

    def poll(self, event: dict[str, Any]) -> list[Difference]:
        fds = [self.codec.fd_value(fd) for fd in event["fds"]]
        try:
            ready = self.backend.poll(fds, 0)
        except OSError as exc:
            return compare(result_of(event), {"errno": errno_of(exc.errno or 0)})
        return compare(result_of(event), {"ret": [self.codec.fd_json(fd) for fd in ready]})

    # -- mappings -----------------------------------------------------------------------------
    def _view(self, mapped: _Mapped, image: bytes, symbols: SymbolTable | None = None) -> Any:
        info = self.symbols.info(str(mapped.fd_symbol)) if is_symbol(mapped.fd_symbol) else None
        consumer = 0
        if mapped.kind == "ringbuf_producer":
            for other in self.mapped.values():
                if other.kind == "ringbuf_consumer" and other.fd_symbol == mapped.fd_symbol:
                    consumer = consumer_position(self._actual_bytes(other))
        table = self.symbols if symbols is None else symbols
        return ring_view(mapped.kind, image, self.scenario.page_size, info, table, consumer)

    @staticmethod
    def _actual_bytes(mapped: _Mapped) -> bytes:
        with memoryview(mapped.actual) as view:
            return bytes(view)

    def ring(self, event: dict[str, Any]) -> list[Difference]:
        mapped = self.mapped.get(str(event["mapping"]))
        if mapped is None:
            return [Difference("mapping", event["mapping"], "not mapped in this run")]
        apply_ranges(mapped.expected, event["bytes"])
        words = CONSUMER_WORDS.get(mapped.kind)
        if event["when"] == "before" and words is not None and not mapped.actual.closed:
            start, size = words
            with memoryview(mapped.actual) as view, contextlib.suppress(TypeError):
                view.cast("B")[start : start + size] = mapped.expected[start : start + size]
        expected_view = self._view(mapped, bytes(mapped.expected), self.recorded)
        actual_view = self._view(mapped, self._actual_bytes(mapped))
        return compare(expected_view, actual_view, "view")

    # -- steps and expectations ---------------------------------------------------------------
    def step(self, event: dict[str, Any]) -> list[Difference]:
        from kernelsim.scenario.steps import run_step

        try:
            outcome = run_step(self.backend, self.codec, event)
        except StepUnavailable as exc:
            return [Difference("step", event["step"], str(exc))]
        if "ret" in event:
            return compare(event["ret"], outcome, "ret")
        return []

    def expect(self, event: dict[str, Any]) -> list[Difference]:
        from kernelsim.scenario.steps import check_expectation

        return check_expectation(self, event)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> Iterator[EventResult]:
        for event in self.scenario.events:
            handler = getattr(self, event.op)
            try:
                differences = handler(event.data)
            except (EventError, CodecError, RangeError, ValueError, KeyError) as exc:
                raise ScenarioError(self.scenario.path, event.line, str(exc)) from None
            yield EventResult(event.line, summary(event.data), tuple(differences))

    def cleanup(self) -> None:
        for mapped in self.mapped.values():
            with contextlib.suppress(OSError, BufferError):
                self.backend.munmap(mapped.actual)
        for fd in self.symbols.open_fds().values():
            with contextlib.suppress(OSError):
                self.backend.close(fd)


def replay_against(scenario: str | os.PathLike[str] | Scenario, backend: Backend) -> ReplayReport:
    """Issue the recorded session on `backend` and report each difference (module
    docstring). ScenarioError for a file that cannot be used, before any call is made."""
    loaded = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    replayer = _Replayer(loaded, backend)
    try:
        results = tuple(replayer.run())
    finally:
        replayer.cleanup()
    return ReplayReport(loaded.path, type(backend).__name__, results)


__all__ = [
    "Difference",
    "EventResult",
    "ReplayReport",
    "compare",
    "replay_against",
]
