"""Kernel files in a scenario: paths and contents, with the values that name things
symbolized.

Theory of operation
-------------------
Rules, applied to read_file and write_file:

* ``.../events/<category>/<name>/id`` (tracefs): the content, a tracepoint id, is written
  ``{"value": "%tp:<category>/<name>"}``; the symbol is bound to the number read.
* ``/sys/bus/event_source/devices/<pmu>/type``: likewise ``{"value": "%pmu:<pmu>"}``.
* ``/proc/sys/kernel/osrelease``: the release string is volatile (``{"volatile": ...}``);
  the scenario header records the kernel it was made on.
* ``/proc/self/fdinfo/<fd>``: the fd in the path is its symbol.
* anything else: text when it is text, hex otherwise (`kernelsim.scenario.blob`).

On a replay the number read from the new kernel is bound to the same symbol, so a
perf_event_open whose config was the recorded tracepoint id is issued with the new one.
"""

from __future__ import annotations

import re
from typing import Any, Final

from kernelsim.scenario.blob import Form, decode_blob, encode_blob
from kernelsim.scenario.rules import is_volatile, volatile
from kernelsim.scenario.symbols import SymbolTable

_TRACEPOINT_ID: Final = re.compile(r"/events/([^/]+)/([^/]+)/id$")
_PMU_TYPE: Final = re.compile(r"^/sys/bus/event_source/devices/([^/]+)/type$")
_FDINFO: Final = re.compile(r"^/proc/self/fdinfo/(\d+|\$[a-z]+\d+)$")
VOLATILE_FILES: Final = frozenset({"/proc/sys/kernel/osrelease"})
INVENTED_BASE: Final = 1000
"""Where a replay without a kernel starts numbering tracepoint ids and PMU types."""


def named_symbol(path: str) -> str | None:
    """The symbol a file's number is bound to, or None for other files."""
    match = _TRACEPOINT_ID.search(path)
    if match:
        return f"%tp:{match.group(1)}/{match.group(2)}"
    match = _PMU_TYPE.match(path)
    if match:
        return f"%pmu:{match.group(1)}"
    return None


def encode_path(path: str, symbols: SymbolTable) -> str:
    match = _FDINFO.match(path)
    if match and match.group(1).isdigit():
        name = symbols.fd_symbol(int(match.group(1)))
        if name is not None:
            return f"/proc/self/fdinfo/{name}"
    return path


def decode_path(path: str, symbols: SymbolTable) -> str:
    match = _FDINFO.match(path)
    if match and match.group(1).startswith("$"):
        fd = symbols.fd_of(match.group(1))
        return f"/proc/self/fdinfo/{fd if fd is not None else 0x7FFF_FFFF}"
    return path


def encode_length(path: str, data: bytes) -> Any:
    """read_file's return value: the length, volatile where the content is."""
    return volatile(len(data)) if path in VOLATILE_FILES else len(data)


def encode_content(path: str, data: bytes, symbols: SymbolTable) -> Any:
    name = named_symbol(path)
    if name is not None:
        try:
            value = int(data.strip())
        except ValueError:
            value = None
        if value is not None and data == f"{value}\n".encode():
            symbols.bind_named(name, value)
            return {"value": name}
    blob = encode_blob(data, Form.TEXT, symbols)
    return volatile(blob) if path in VOLATILE_FILES else blob


def decode_content(value: Any, symbols: SymbolTable) -> bytes:
    """The bytes of a recorded content (a replay without a kernel invents symbol values)."""
    if is_volatile(value):
        value = value["volatile"]
    if isinstance(value, dict) and set(value) == {"value"}:
        name = str(value["value"])
        number = symbols.named_value(name)
        if number is None:
            number = INVENTED_BASE + _invented(symbols)
            symbols.bind_named(name, number)
        return f"{number}\n".encode()
    return decode_blob(value, symbols)


def _invented(symbols: SymbolTable) -> int:
    count = 0
    while symbols.named_symbol("%tp", INVENTED_BASE + count) or symbols.named_symbol(
        "%pmu", INVENTED_BASE + count
    ):
        count += 1
    return count
