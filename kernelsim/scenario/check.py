"""Decode-checking a whole scenario before it is used: replay never half-applies.

`check_decodes` walks the events as a replay would, without a kernel: every symbol must have
been bound by an earlier event (an fd by the call that returned it, a mapping by its mmap),
every call must rebuild (its attr fields, blobs and instructions decode), every ring event's
ranges must be well formed, every step and expectation must be one that exists. The first
problem is a ScenarioError with its line.
"""

from __future__ import annotations

from typing import Any

from kernelsim.scenario.calls import PERF_OPEN_FLAGS, CallCodec, EventError, value_of
from kernelsim.scenario.codec import Buffers, CodecError
from kernelsim.scenario.errors import ScenarioError
from kernelsim.scenario.files import decode_content
from kernelsim.scenario.format import Scenario
from kernelsim.scenario.rings import RangeError, apply_ranges
from kernelsim.scenario.steps import STEPS
from kernelsim.scenario.symbols import FdInfo, SymbolTable, is_symbol


class _NoMemory:
    def read(self, addr: int, size: int) -> bytes:
        raise OSError(14, "no memory while checking")

    def write(self, addr: int, data: bytes) -> None:
        raise OSError(14, "no memory while checking")

    def read_cstring(self, addr: int, max_len: int) -> tuple[bytes, bool]:
        raise OSError(14, "no memory while checking")


def _symbols_in(value: Any) -> list[str]:
    if isinstance(value, str) and value[:1] == "$" and is_symbol(value):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() if key not in ("ret",) for s in _symbols_in(item)]
    if isinstance(value, list):
        return [s for item in value for s in _symbols_in(item)]
    return []


def check_decodes(scenario: Scenario) -> None:
    """Raise ScenarioError at the first event a replay could not use."""
    symbols = SymbolTable(invent=True)
    codec = CallCodec(symbols, _NoMemory(), scenario.possible_cpus)
    bound: set[str] = set()
    mappings: dict[str, int] = {}
    for event in scenario.events:
        data = event.data
        try:
            request = {k: v for k, v in data.items() if k not in ("ret", "changed", "written")}
            for name in _symbols_in(request):
                if name not in bound:
                    raise EventError(f"fd symbol {name} is used before any call returned it")
            _check_one(codec, data, mappings)
        except (EventError, CodecError, RangeError, ValueError, KeyError, TypeError) as exc:
            raise ScenarioError(scenario.path, event.line, str(exc)) from None
        ret = data.get("ret")
        if isinstance(ret, str) and ret.startswith("$"):
            bound.add(ret)
            symbols.new_fd(10_000 + len(bound), FdInfo(ret.strip("$0123456789")), ret)


def _check_one(codec: CallCodec, data: dict[str, Any], mappings: dict[str, int]) -> None:
    op = data["op"]
    buffers = Buffers()
    if op == "bpf":
        codec.rebuild_bpf(data, buffers)
    elif op == "perf_event_open":
        codec.rebuild_perf_attr(data, buffers)
        value_of(data.get("flags", 0), PERF_OPEN_FLAGS)
    elif op == "ioctl":
        codec.rebuild_ioctl_arg(data, buffers)
    elif op == "mmap" and isinstance(data.get("ret"), str):
        mappings[data["ret"]] = int(data["length"])
    elif op in ("ring", "munmap"):
        if data["mapping"] not in mappings:
            raise EventError(f"mapping {data['mapping']} is used before an mmap returned it")
        if op == "ring":
            apply_ranges(bytearray(mappings[data["mapping"]]), data["bytes"])
    elif op == "read_file" and "content" in data:
        decode_content(data["content"], codec.symbols)
    elif op == "step" and data["step"] not in STEPS:
        raise EventError(f"unknown step {data['step']!r} (known: {', '.join(STEPS)})")
    elif op == "expect" and "ring" not in data and "map" not in data:
        raise EventError("an expect event needs ring or map")
