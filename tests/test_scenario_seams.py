"""The recorder's seams (memory, fd learning, stand-in fds), what a replay remembers (its first
divergence, the recorded pid), and the codec facts they rely on (volatile ``init`` memory,
members of anonymous unions)."""

from __future__ import annotations

import ctypes
import errno
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from bpfsys import bpf
from bpfsys.abi import (
    BpfCmd,
    BpfLinkInfo,
    MapElemAttr,
    MapType,
    PerfEventLinkInfo,
    PerfEventTracepointLinkInfo,
    ProgType,
    RawTracepointLinkInfo,
)
from bpfsys.asm import assemble_text
from bpfsys.attach import attach_tracepoint
from bpfsys.backend import Backend, use_backend
from kernelsim import Kernel, KernelConfig, SimBackend
from kernelsim.errors import fail
from kernelsim.scenario import (
    RecordingBackend,
    ReplayBackend,
    ScenarioDivergence,
    diff_scenarios,
    load_scenario,
    replay_against,
)
from kernelsim.scenario.codec import field_at
from kernelsim.scenario.learn import fd_info_of, learn_fd, parse_fdinfo
from kernelsim.scenario.symbols import FdInfo, SymbolTable
from kernelsim.usermem import ProcessMemory

KEY, VALUE = struct.Struct("<I"), struct.Struct("<Q")


def events(path: Path) -> list[dict[str, Any]]:
    return [event.data for event in load_scenario(path).events]


# ---------------------------------------------------------------------------------------------
# Learning what an fd is, from fdinfo
# ---------------------------------------------------------------------------------------------
def test_fdinfo_fields_name_the_kind_and_a_maps_sizes() -> None:
    text = "pos:\t0\nflags:\t02000002\nmap_type:\t1\nkey_size:\t4\nvalue_size:\t8\n"
    fields = parse_fdinfo(text)
    assert fields["flags"] == "02000002"
    assert fd_info_of(fields, "obj") == FdInfo("map", MapType.HASH, 4, 8)
    assert fd_info_of(fields, "map") == FdInfo("map", MapType.HASH, 4, 8)
    assert fd_info_of({"prog_type": "1"}, "obj") == FdInfo("prog")
    assert fd_info_of({"link_type": "perf"}, "obj") == FdInfo("link")
    assert fd_info_of({"pos": "0"}, "obj") == FdInfo("obj")
    assert fd_info_of({"map_type": "1"}, "map") == FdInfo("map")  # sizes missing: kind only


def test_learn_fd_reads_the_fdinfo_of_the_backend(backend: Backend) -> None:
    with bpf.map_create(MapType.PERCPU_ARRAY, 4, 12, 2, backend=backend) as fd:
        number = fd.fileno()
        assert learn_fd(backend, number, "obj") == FdInfo("map", MapType.PERCPU_ARRAY, 4, 12)
    assert learn_fd(backend, number, "obj") == FdInfo("obj")  # closed: the kind stays


# ---------------------------------------------------------------------------------------------
# The memory seam: pointers read and written where the code's memory is
# ---------------------------------------------------------------------------------------------
class BufferMemory:
    """A caller's memory that is not this process's: a page at an address this process does
    not map (the simulator and the recorder both reach it through this object only)."""

    BASE = 0x6F00_0000_0000

    def __init__(self) -> None:
        self.page = bytearray(4096)

    def _span(self, addr: int, size: int) -> slice:
        start = addr - self.BASE
        if start < 0 or start + size > len(self.page):
            fail(errno.EFAULT, f"{addr:#x}+{size} is outside the buffer")
        return slice(start, start + size)

    def read(self, addr: int, size: int) -> bytes:
        return bytes(self.page[self._span(addr, size)])

    def write(self, addr: int, data: bytes) -> None:
        self.page[self._span(addr, len(data))] = data

    def read_cstring(self, addr: int, max_len: int) -> tuple[bytes, bool]:
        data = self.read(addr, min(max_len, self.BASE + len(self.page) - addr))
        nul = data.find(b"\0")
        return (data, False) if nul < 0 else (data[:nul], True)


def _elem_call(backend: Backend, cmd: BpfCmd, fd: int, key: int, value: int) -> int:
    attr = MapElemAttr(map_fd=fd, key=key, value=value)
    return backend.bpf(cmd, attr, ctypes.sizeof(attr))


def test_the_recorder_reads_pointers_through_its_memory_seam(tmp_path: Path) -> None:
    memory = BufferMemory()
    with pytest.raises(OSError):  # nothing of this process is there
        ProcessMemory().read(memory.BASE, 4)
    kernel = Kernel()
    kernel.memory = memory  # the simulator's copy_from_user / copy_to_user
    path = tmp_path / "seam.jsonl"
    key, value, out = memory.BASE, memory.BASE + 16, memory.BASE + 32
    memory.write(key, KEY.pack(7))
    memory.write(value, VALUE.pack(0x1234))
    with RecordingBackend(SimBackend(kernel), path, memory=memory) as recorder:
        fd = bpf.map_create(MapType.HASH, 4, 8, 4, backend=recorder).take()
        _elem_call(recorder, BpfCmd.MAP_UPDATE_ELEM, fd, key, value)
        _elem_call(recorder, BpfCmd.MAP_LOOKUP_ELEM, fd, key, out)
        recorder.close(fd)
    assert memory.read(out, 8) == VALUE.pack(0x1234)
    update, lookup = events(path)[1:3]
    assert update["attr"]["*key"] == {"len": 4, "in": "07000000"}
    assert update["attr"]["*value"] == {"len": 8, "in": "3412000000000000"}
    assert lookup["written"] == {"*value": "3412000000000000"}
    assert replay_against(path, SimBackend()).passed


# ---------------------------------------------------------------------------------------------
# The learning seam
# ---------------------------------------------------------------------------------------------
def test_the_recorder_asks_its_learning_seam_what_a_new_fd_is(tmp_path: Path) -> None:
    asked: list[tuple[int, str]] = []

    def learn(fd: int, kind: str) -> FdInfo:
        asked.append((fd, kind))
        return FdInfo("map", MapType.ARRAY, 4, 4)

    path = tmp_path / "learn.jsonl"
    with RecordingBackend(SimBackend(), path, learn=learn) as recorder, use_backend(recorder):
        with bpf.map_create(MapType.ARRAY, 4, 4, 1) as made:
            bpf.obj_pin(made, "/sys/fs/bpf/learned")
        with bpf.obj_get("/sys/fs/bpf/learned") as got:
            assert asked == [(got.fileno(), "obj")]
    (get,) = [e for e in events(path) if e.get("cmd") == "OBJ_GET"]
    assert get["object"] == {"kind": "map", "map_type": "ARRAY", "key_size": 4, "value_size": 4}


# ---------------------------------------------------------------------------------------------
# Stand-in fds (a supervisor hands the new fds to a traced program)
# ---------------------------------------------------------------------------------------------
def test_a_stand_in_never_unbinds_the_program_fd_of_its_number() -> None:
    table = SymbolTable(stand_ins=True)
    assert table.new_fd(5, FdInfo("map")) == "$map1"
    assert table.fd_symbol(5) is None  # a stand-in binds no number
    assert table.deliver(5, 5) == "$map1"
    assert table.new_fd(5, FdInfo("map")) == "$map2"  # the stand-in reuses number 5
    assert table.fd_symbol(5) == "$map1"
    assert table.deliver(5, 6) == "$map2"
    assert (table.fd_symbol(5), table.fd_symbol(6)) == ("$map1", "$map2")
    assert table.new_fd(9, FdInfo("prog")) == "$prog1"
    assert table.withdraw(9) == "$prog1"
    assert table.deliver(9, 9) is None and table.fd_symbol(9) is None


def test_stand_in_fds_are_bound_on_delivery_and_closed_when_told(tmp_path: Path) -> None:
    sim = SimBackend()
    path = tmp_path / "stand_ins.jsonl"
    with RecordingBackend(sim, path, stand_in_fds=True) as recorder:
        first = bpf.map_create(MapType.ARRAY, 4, 8, 2, backend=recorder).take()
        recorder.fd_delivered(first, 100)  # the program holds the map as fd 100
        second = bpf.map_create(MapType.HASH, 4, 8, 2, backend=recorder).take()
        recorder.fd_undelivered(second)  # the program never got it
        recorder.fd_closed(100)  # the program closed its fd itself
        recorder.fd_closed(100)  # no symbol any more: nothing written
    for fd in (first, second):
        sim.close(fd)
    assert [(e["op"], e.get("ret", e.get("fd"))) for e in events(path)] == [
        ("bpf", "$map1"),
        ("bpf", "$map2"),
        ("close", "$map2"),
        ("close", "$map1"),
    ]
    assert replay_against(path, SimBackend()).passed


# ---------------------------------------------------------------------------------------------
# Replays: the first divergence sticks; the recorded pid
# ---------------------------------------------------------------------------------------------
def _record_array_session(path: Path, pid: int) -> None:
    sim = SimBackend(Kernel(KernelConfig(pid=pid)))
    with (
        RecordingBackend(sim, path) as recorder,
        use_backend(recorder),
        bpf.map_create(MapType.ARRAY, 4, 8, 2) as fd,
    ):
        bpf.map_update_elem(fd, KEY.pack(1), VALUE.pack(5))


def test_a_replay_keeps_raising_its_first_divergence(tmp_path: Path) -> None:
    path = tmp_path / "array.jsonl"
    _record_array_session(path, pid=4242)
    replay = ReplayBackend(path)
    assert replay.recorded_pid == 4242
    with use_backend(replay):
        fd = bpf.map_create(MapType.ARRAY, 4, 8, 2).take()
        with pytest.raises(ScenarioDivergence) as first:
            bpf.map_update_elem(fd, KEY.pack(0), VALUE.pack(5))  # key 0, not 1
        with pytest.raises(ScenarioDivergence) as again:  # the right call comes too late
            bpf.map_update_elem(fd, KEY.pack(1), VALUE.pack(5))
    assert again.value is first.value is replay.divergence
    assert '"in": "00000000"' in str(first.value) and '"in": "01000000"' in str(first.value)
    with pytest.raises(ScenarioDivergence) as at_finish:  # even when the code swallowed it
        replay.finish()
    assert at_finish.value is first.value


def test_a_recording_without_a_pid_says_so(tmp_path: Path) -> None:
    path = tmp_path / "array.jsonl"
    _record_array_session(path, pid=77)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["pid"] == 77
    del header["pid"]
    path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    assert ReplayBackend(path).recorded_pid is None


# ---------------------------------------------------------------------------------------------
# Codec facts
# ---------------------------------------------------------------------------------------------
def _lookup_into_garbage(backend: Backend, garbage: bytes) -> bytes:
    """A lookup into a value buffer the code left unset (a native program's malloc)."""
    key = ctypes.create_string_buffer(KEY.pack(1), 4)
    value = ctypes.create_string_buffer(garbage, 8)
    with use_backend(backend), bpf.map_create(MapType.ARRAY, 4, 8, 2) as fd:
        bpf.map_update_elem(fd, KEY.pack(1), VALUE.pack(9))
        _elem_call(
            backend, BpfCmd.MAP_LOOKUP_ELEM, fd.fileno(), ctypes.addressof(key),
            ctypes.addressof(value),
        )  # fmt: skip
    return value.raw


def test_what_an_output_buffer_held_before_is_volatile(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path, garbage in ((a, b"\xde\xad" * 4), (b, b"\x01\x02" * 4)):
        with RecordingBackend(SimBackend(), path) as recorder:
            assert _lookup_into_garbage(recorder, garbage) == VALUE.pack(9)
    (lookup,) = [e for e in events(a) if e.get("cmd") == "MAP_LOOKUP_ELEM"]
    assert lookup["attr"]["*value"] == {"len": 8, "init": {"volatile": "deaddeaddeaddead"}}
    assert diff_scenarios(a, b).passed
    assert replay_against(a, SimBackend()).passed
    replay = ReplayBackend(a)
    assert _lookup_into_garbage(replay, b"\x55" * 8) == VALUE.pack(9)  # other garbage: no matter
    replay.finish()


def test_members_of_anonymous_unions_are_found_by_name() -> None:
    raw = field_at(BpfLinkInfo, "raw_tracepoint.tp_name")
    assert raw[0] == BpfLinkInfo.raw_tracepoint.offset + RawTracepointLinkInfo.tp_name.offset
    offset, size, _ = field_at(BpfLinkInfo, "perf_event.tracepoint.tp_name")
    expected = (
        BpfLinkInfo.perf_event.offset
        + PerfEventLinkInfo.tracepoint.offset
        + PerfEventTracepointLinkInfo.tp_name.offset
    )
    assert (offset, size) == (expected, 8)


def test_a_link_info_call_is_recorded_and_replays(tmp_path: Path) -> None:
    """bpf_link_info's pointers sit in its anonymous union: the recorder follows them."""
    path = tmp_path / "link_info.jsonl"
    insns = assemble_text("mov %r0, 0\nexit")
    with (
        RecordingBackend(SimBackend(), path) as recorder,
        use_backend(recorder),
        bpf.prog_load(ProgType.TRACEPOINT, insns, name="tp") as prog,
    ):
        attachment = attach_tracepoint(prog, "syscalls", "sys_enter_getpid")
        try:
            assert attachment.link_fd is not None
            assert bpf.link_info(attachment.link_fd).prog_id == bpf.prog_info(prog).id
        finally:
            attachment.detach()
    infos = [e for e in events(path) if e.get("cmd") == "OBJ_GET_INFO_BY_FD"]
    assert any(e["attr"]["bpf_fd"].startswith("$link") for e in infos)
    report = replay_against(path, SimBackend())
    assert report.passed, report.describe()
