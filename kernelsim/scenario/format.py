"""The scenario file: JSON Lines, versioned, checked whole before anything uses it.

Theory of operation
-------------------
Line 1 is the header, the last line the end marker; every line between is one event::

    {"kernelsim_scenario": 1, "kernel": {"release": "6.18.44", "version": "6.18",
     "possible_cpus": 2, "online_cpus": 2, "page_size": 4096, "machine": "x86_64"},
     "recorded_on": "live", "pid": 4242, "source": "scenarios/sources/map_lifecycle.py"}
    {"op": "bpf", "cmd": "MAP_CREATE", "size": 80, "attr": {...}, "ret": "$map1"}
    ...
    {"end": 42}

The header's ``kernelsim_scenario`` is the format version (`FORMAT_VERSION`); a file of a newer
version is refused. ``kernel`` is the profile the session ran on; ``pid`` (optional) the
process the recorded kernel saw the calls come from. The end marker counts the
events: a file without it, or whose count differs, was cut short (a recorder that did not get
to close, a copy that lost lines) and is refused as truncated.

Events: the backend calls (`kernelsim.scenario.calls`), ``ring`` (bytes of a mapping that
changed: ``{"op": "ring", "mapping": "%mmap1", "when": "after", "bytes": [[offset, hex],
...]}``, see `kernelsim.scenario.rings`), ``step`` (a simulator action written by hand:
``tick``, ``perf_output``, ``fire_tracepoint``) and ``expect`` (the state a replay must find:
ring records, lost counts, map contents); see docs/scenarios.md.

`load_scenario` reads and checks the whole file (JSON, header, version, end marker, each event's
shape, every symbol bound before use, every call decodable) and raises `ScenarioError` naming
the file, the line and the reason; nothing is replayed from a file that fails. `ScenarioWriter`
writes one line per event as it comes (flushed), and the end marker on `close`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

import attrs

from kernelsim.scenario.errors import ScenarioError

FORMAT_VERSION: Final = 1
MAGIC: Final = "kernelsim_scenario"
EVENT_OPS: Final = (
    "bpf",
    "perf_event_open",
    "ioctl",
    "mmap",
    "munmap",
    "close",
    "read_file",
    "write_file",
    "poll",
    "ring",
    "step",
    "expect",
)
REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "bpf": ("cmd", "size", "attr"),
    "perf_event_open": ("attr", "pid", "cpu", "group_fd"),
    "ioctl": ("fd", "request"),
    "mmap": ("fd", "length", "prot", "flags", "offset"),
    "munmap": ("mapping",),
    "close": ("fd",),
    "read_file": ("path",),
    "write_file": ("path", "data"),
    "poll": ("fds", "timeout_ms"),
    "ring": ("mapping", "when", "bytes"),
    "step": ("step",),
    "expect": (),
}
CALLS_WITH_RESULT: Final = frozenset(EVENT_OPS[:9])


@attrs.define
class Event:
    """One event of a scenario and the line it is on."""

    line: int
    data: dict[str, Any]

    @property
    def op(self) -> str:
        return str(self.data["op"])


@attrs.define
class Scenario:
    """A checked scenario file."""

    path: str
    header: dict[str, Any]
    events: list[Event]

    @property
    def kernel(self) -> dict[str, Any]:
        kernel = self.header.get("kernel", {})
        return kernel if isinstance(kernel, dict) else {}

    @property
    def kernel_version(self) -> str:
        return str(self.kernel.get("version", "6.18"))

    @property
    def possible_cpus(self) -> int:
        cpus = self.kernel.get("possible_cpus", 2)
        return cpus if isinstance(cpus, int) and cpus > 0 else 2

    @property
    def page_size(self) -> int:
        size = self.kernel.get("page_size", 4096)
        return size if isinstance(size, int) and size > 0 else 4096

    def calls(self) -> Iterator[Event]:
        return (e for e in self.events if e.op in CALLS_WITH_RESULT)


def _parse_line(path: str, number: int, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(path, number, f"not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict):
        raise ScenarioError(path, number, f"a line must hold a JSON object, got {value!r}")
    return value


def check_header(path: str, header: dict[str, Any]) -> None:
    version = header.get(MAGIC)
    if version is None:
        raise ScenarioError(path, 1, f"not a scenario file: line 1 has no {MAGIC!r} key")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ScenarioError(path, 1, f"format version must be a positive number, got {version!r}")
    if version > FORMAT_VERSION:
        raise ScenarioError(
            path,
            1,
            f"format version {version} is newer than this kernelsim reads ({FORMAT_VERSION})",
        )
    if not isinstance(header.get("kernel", {}), dict):
        raise ScenarioError(path, 1, "kernel must be an object")


def check_event(path: str, event: Event) -> None:
    op = event.data.get("op")
    if op not in EVENT_OPS:
        raise ScenarioError(path, event.line, f"unknown op {op!r} (known: {', '.join(EVENT_OPS)})")
    missing = [key for key in REQUIRED[str(op)] if key not in event.data]
    if missing:
        raise ScenarioError(path, event.line, f"{op} event lacks {', '.join(missing)}")
    needs_result = op in CALLS_WITH_RESULT and op not in ("close", "munmap", "write_file")
    if needs_result and "ret" not in event.data and "errno" not in event.data:
        raise ScenarioError(path, event.line, f"{op} event has neither ret nor errno")


def parse_scenario(path: str, text: str) -> Scenario:
    """Check the structure of a scenario's text (see the module docstring)."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ScenarioError(path, 0, "empty file")
    first_line, first = lines[0]
    header = _parse_line(path, first_line, first)
    check_header(path, header)
    last_line, last = lines[-1]
    trailer = _parse_line(path, last_line, last) if len(lines) > 1 else {}
    if set(trailer) != {"end"}:
        raise ScenarioError(path, last_line, "truncated: the file has no end marker")
    events = [Event(n, _parse_line(path, n, line)) for n, line in lines[1:-1]]
    if trailer["end"] != len(events):
        raise ScenarioError(
            path,
            last_line,
            f"truncated: the end marker counts {trailer['end']!r} events, the file has "
            f"{len(events)}",
        )
    for event in events:
        check_event(path, event)
    return Scenario(path, header, events)


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read, check and decode-check a scenario file; ScenarioError on any problem."""
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(name, 0, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(name, 0, f"not UTF-8: {exc.reason}") from None
    scenario = parse_scenario(name, text)
    from kernelsim.scenario.check import check_decodes

    check_decodes(scenario)
    return scenario


def dump_line(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False)


class ScenarioWriter:
    """Writes a scenario line by line: the header now, events as they come, the end marker on
    close."""

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any]) -> None:
        self.path = os.fspath(path)
        self._file: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        self._count = 0
        self._write({MAGIC: FORMAT_VERSION, **header})

    def _write(self, value: dict[str, Any]) -> None:
        assert self._file is not None
        self._file.write(dump_line(value) + "\n")
        self._file.flush()

    def write(self, event: dict[str, Any]) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: the scenario is closed")
        self._write(event)
        self._count += 1

    @property
    def closed(self) -> bool:
        return self._file is None

    def close(self) -> None:
        if self._file is not None:
            self._write({"end": self._count})
            self._file.close()
            self._file = None
