"""Scenario format: blobs, struct encodings and files round trip; bad files are refused with
the file, line and reason; nothing is replayed from them."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsys.abi import ATTR_OF_COMMAND, BpfCmd, PerfEventAttr
from bpfsys.backend import DelegatingBackend, WritableBuffer
from kernelsim import SimBackend
from kernelsim.scenario import ScenarioError, load_scenario, replay_against
from kernelsim.scenario.blob import Form, decode_blob, encode_blob
from kernelsim.scenario.codec import Buffers, Context, build_struct, encode_struct, field_at
from kernelsim.scenario.format import FORMAT_VERSION, ScenarioWriter
from kernelsim.scenario.symbols import FdInfo, SymbolTable
from kernelsim.usermem import ProcessMemory

HEADER: dict[str, Any] = {
    "kernelsim_scenario": FORMAT_VERSION,
    "kernel": {"version": "6.18", "possible_cpus": 2},
}
CREATE: dict[str, Any] = {
    "op": "bpf",
    "cmd": "MAP_CREATE",
    "size": 72,
    "attr": {"map_type": "HASH", "key_size": 4, "value_size": 8, "max_entries": 4},
    "ret": "$map1",
}
UPDATE: dict[str, Any] = {
    "op": "bpf",
    "cmd": "MAP_UPDATE_ELEM",
    "size": 32,
    "attr": {
        "map_fd": "$map1",
        "*key": {"len": 4, "in": "01000000"},
        "*value": {"len": 8, "in": "2a00000000000000"},
    },
    "ret": 0,
}
CLOSE = {"op": "close", "fd": "$map1"}


def write(path: Path, lines: list[Any]) -> Path:
    path.write_text(
        "".join(json.dumps(x) + "\n" if not isinstance(x, str) else x + "\n" for x in lines)
    )
    return path


def events(*body: Any) -> list[Any]:
    return [HEADER, *body, {"end": len(body)}]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=80), st.sampled_from([f for f in Form if f is not Form.INSNS]))
def test_blob_round_trip(data: bytes, form: Form) -> None:
    symbols = SymbolTable()
    symbols.new_fd(7, FdInfo("map"))
    assert decode_blob(encode_blob(data, form, symbols, "map"), symbols) == data


def _pointer_offsets(cls: Any, cmd: BpfCmd | None) -> list[int]:
    table = cls.pointers_for(cmd) if cmd is not None else {}
    return [field_at(cls, path)[0] for path in table]


COMMANDS = sorted(ATTR_OF_COMMAND, key=int)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(COMMANDS), st.data())
def test_attr_fields_round_trip(cmd: BpfCmd, data: st.DataObject) -> None:
    """Any attr image whose pointers are NULL encodes by name and builds back to itself."""
    cls = ATTR_OF_COMMAND[cmd]
    size = ctypes.sizeof(cls)
    image = bytearray(data.draw(st.binary(min_size=size, max_size=size)))
    for offset in _pointer_offsets(cls, cmd):
        image[offset : offset + 8] = bytes(8)
    ctx = Context(SymbolTable(), ProcessMemory(), 2, cmd)
    fields, slots = encode_struct(cls, bytes(image), ctx)
    assert slots == []
    json.dumps(fields)
    assert bytes(build_struct(cls, fields, size, ctx, Buffers())) == bytes(image)


def test_pointer_memory_round_trips() -> None:
    """An encoded pointer builds a fresh buffer holding the same bytes."""
    symbols = SymbolTable()
    symbols.new_fd(5, FdInfo("map", 1, 4, 8))
    ctx = Context(symbols, ProcessMemory(), 2, BpfCmd.MAP_UPDATE_ELEM)
    key, value = ctypes.create_string_buffer(b"\x01\0\0\0", 4), ctypes.create_string_buffer(8)
    cls = ATTR_OF_COMMAND[BpfCmd.MAP_UPDATE_ELEM]
    attr = cls(map_fd=5, key=ctypes.addressof(key), value=ctypes.addressof(value))
    fields, slots = encode_struct(cls, bytes(attr), ctx)
    assert fields["map_fd"] == "$map1" and fields["*key"] == {"len": 4, "in": "01000000"}
    assert [s.path for s in slots] == ["key", "value"]
    buffers = Buffers()
    rebuilt = build_struct(cls, fields, ctypes.sizeof(cls), ctx, buffers)
    again, _ = encode_struct(cls, bytes(rebuilt), ctx)
    assert again == fields


def test_perf_attr_names() -> None:
    ctx = Context(SymbolTable(), ProcessMemory(), 2)
    attr = PerfEventAttr(type=1, config=10, sample_type=1 << 10, size=136)
    fields, _ = encode_struct(PerfEventAttr, bytes(attr), ctx)
    assert fields["type"] == "SOFTWARE" and fields["config"] == "BPF_OUTPUT"
    assert fields["sample_type"] == ["RAW"]
    assert bytes(build_struct(PerfEventAttr, fields, 136, ctx, Buffers())) == bytes(attr)


def test_writer_and_loader_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    writer = ScenarioWriter(path, {"kernel": {"version": "5.15", "possible_cpus": 4}})
    for event in (CREATE, UPDATE, CLOSE):
        writer.write(event)
    writer.close()
    scenario = load_scenario(path)
    assert [e.data for e in scenario.events] == [CREATE, UPDATE, CLOSE]
    assert [e.line for e in scenario.events] == [2, 3, 4]
    assert scenario.kernel_version == "5.15" and scenario.possible_cpus == 4


BAD_FILES = [
    (["{not json"], 1, "not JSON"),
    ([{"kernel": {}}, {"end": 0}], 1, "not a scenario file"),
    ([{**HEADER, "kernelsim_scenario": FORMAT_VERSION + 1}, {"end": 0}], 1, "newer"),
    ([HEADER, CREATE], 2, "truncated"),
    ([HEADER, CREATE, {"end": 2}], 3, "truncated"),
    (events({"op": "fork"}), 2, "unknown op"),
    (events({"op": "bpf", "cmd": "MAP_CREATE"}), 2, "lacks size, attr"),
    (events({**CREATE, "ret": None, "errno": None} | {"ret": "$map1"}, UPDATE, "oops"), 4, "JSON"),
    (events(UPDATE), 2, "$map1 is used before"),
    (events(CREATE, {**UPDATE, "attr": {**UPDATE["attr"], "bogus": 1}}), 3, "no field 'bogus'"),
    (events(CREATE, {**UPDATE, "attr": {**UPDATE["attr"], "*key": {"len": 4, "in": "zz"}}}), 3,
     "bad blob"),
    (events({**CREATE, "attr": {"map_type": "NO_SUCH_TYPE"}}), 2, "not a MapType"),
    (events({"op": "ring", "mapping": "%mmap1", "when": "after", "bytes": []}), 2,
     "before an mmap"),
    (events({"op": "step", "step": "reboot"}), 2, "unknown step"),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "line", "reason"), BAD_FILES)
def test_bad_files_are_refused_with_line_and_reason(
    tmp_path: Path, lines: list[Any], line: int, reason: str
) -> None:
    path = write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert caught.value.path == str(path)
    assert caught.value.line == line, str(caught.value)
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}:{line}: ")


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ScenarioError, match="empty file"):
        load_scenario(tmp_path / "empty.jsonl")
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.jsonl")


class CountingBackend(DelegatingBackend):
    def __init__(self) -> None:
        super().__init__(SimBackend())
        self.calls = 0

    def bpf(self, cmd: int, attr: WritableBuffer, size: int) -> int:
        self.calls += 1
        return super().bpf(cmd, attr, size)


def test_a_bad_file_is_never_half_applied(tmp_path: Path) -> None:
    """The bad event is last: no call of the good ones before it is made."""
    bad = {**UPDATE, "attr": {**UPDATE["attr"], "*value": {"len": 8, "in": {"fd": 3.5}}}}
    path = write(tmp_path / "late.jsonl", events(CREATE, UPDATE, bad))
    backend = CountingBackend()
    with pytest.raises(ScenarioError) as caught:
        replay_against(path, backend)
    assert caught.value.line == 4
    assert backend.calls == 0
