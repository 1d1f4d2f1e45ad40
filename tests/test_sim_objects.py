"""Object ids, OBJ_GET_INFO_BY_FD, fdinfo and ENABLE_STATS on every backend (raw bpf() level):
the same return values, errnos and written-back bytes on the simulator and the live kernel."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import struct

import pytest
from objects_support import (
    bpf,
    fdinfo,
    fdinfo_keys,
    info_call,
    info_of,
    make_map,
    map_id,
    ok,
)

from bpfsys.abi import (
    BpfCmd,
    BpfMapInfo,
    EnableStatsAttr,
    GetIdAttr,
    MapElemAttr,
    MapFlag,
    MapType,
)
from bpfsys.backend import Backend
from kernelsim.backend import SimBackend

INT_MAX = 0x7FFFFFFF
NEXT_ID_COMMANDS = (
    BpfCmd.PROG_GET_NEXT_ID,
    BpfCmd.MAP_GET_NEXT_ID,
    BpfCmd.LINK_GET_NEXT_ID,
    BpfCmd.BTF_GET_NEXT_ID,
)
FD_BY_ID_COMMANDS = (
    BpfCmd.PROG_GET_FD_BY_ID,
    BpfCmd.MAP_GET_FD_BY_ID,
    BpfCmd.LINK_GET_FD_BY_ID,
    BpfCmd.BTF_GET_FD_BY_ID,
)


def by_id(backend: Backend, cmd: BpfCmd, obj_id: int, open_flags: int = 0) -> int | str:
    return bpf(backend, cmd, GetIdAttr(start_id=obj_id, open_flags=open_flags))


# -- GET_NEXT_ID ------------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", NEXT_ID_COMMANDS, ids=lambda c: c.name)
@pytest.mark.parametrize(
    ("start_id", "expected"), [(INT_MAX, "EINVAL"), (0xFFFFFFFF, "EINVAL"), (INT_MAX - 1, "ENOENT")]
)
def test_next_id_bounds(backend: Backend, cmd: BpfCmd, start_id: int, expected: str) -> None:
    attr = GetIdAttr(start_id=start_id, next_id=0xABCD)
    assert bpf(backend, cmd, attr) == expected
    assert attr.next_id == 0xABCD  # nothing written back on failure


@pytest.mark.parametrize("cmd", [BpfCmd.PROG_GET_NEXT_ID, BpfCmd.MAP_GET_NEXT_ID])
def test_next_id_with_open_flags_is_einval(backend: Backend, cmd: BpfCmd) -> None:
    assert bpf(backend, cmd, GetIdAttr(start_id=0, open_flags=1)) == "EINVAL"


def test_next_id_finds_a_new_map(backend: Backend) -> None:
    fd = make_map(backend)
    mid = map_id(backend, fd)
    attr = GetIdAttr(start_id=mid - 1)
    assert bpf(backend, BpfCmd.MAP_GET_NEXT_ID, attr) == 0
    assert attr.next_id == mid
    backend.close(fd)


# -- GET_FD_BY_ID -----------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", FD_BY_ID_COMMANDS, ids=lambda c: c.name)
@pytest.mark.parametrize("obj_id", [0, INT_MAX - 15, 0xFFFFFFFF])
def test_fd_by_unknown_id_is_enoent(backend: Backend, cmd: BpfCmd, obj_id: int) -> None:
    assert by_id(backend, cmd, obj_id) == "ENOENT"


@pytest.mark.parametrize(
    "cmd",
    [BpfCmd.PROG_GET_FD_BY_ID, BpfCmd.LINK_GET_FD_BY_ID, BpfCmd.BTF_GET_FD_BY_ID],
    ids=lambda c: c.name,
)
@pytest.mark.parametrize("open_flags", [MapFlag.RDONLY, 1])
def test_fd_by_id_open_flags_only_for_maps(backend: Backend, cmd: BpfCmd, open_flags: int) -> None:
    assert by_id(backend, cmd, INT_MAX - 15, open_flags) == "EINVAL"


@pytest.mark.parametrize(
    ("open_flags", "expected_flags"),
    [(0, "02000002"), (MapFlag.RDONLY, "02000000"), (MapFlag.WRONLY, "02000001")],
)
def test_map_fd_by_id_access_modes(backend: Backend, open_flags: int, expected_flags: str) -> None:
    fd = make_map(backend)
    again = by_id(backend, BpfCmd.MAP_GET_FD_BY_ID, map_id(backend, fd), open_flags)
    assert isinstance(again, int) and again != fd
    assert fdinfo(backend, again)["flags"] == expected_flags
    assert map_id(backend, again) == map_id(backend, fd)
    backend.close(again)
    backend.close(fd)


@pytest.mark.parametrize("open_flags", [MapFlag.RDONLY | MapFlag.WRONLY, 1, 1 << 5, 1 << 16])
def test_map_fd_by_id_bad_open_flags(backend: Backend, open_flags: int) -> None:
    fd = make_map(backend)
    assert by_id(backend, BpfCmd.MAP_GET_FD_BY_ID, map_id(backend, fd), open_flags) == "EINVAL"
    backend.close(fd)


def test_map_id_is_gone_after_its_last_fd(backend: Backend) -> None:
    fd = make_map(backend)
    mid = map_id(backend, fd)
    again = ok(by_id(backend, BpfCmd.MAP_GET_FD_BY_ID, mid))
    backend.close(fd)
    assert map_id(backend, again) == mid  # the second fd keeps it
    backend.close(again)
    assert by_id(backend, BpfCmd.MAP_GET_FD_BY_ID, mid) == "ENOENT"


def test_ids_are_not_reused(backend: Backend) -> None:
    first = make_map(backend)
    first_id = map_id(backend, first)
    backend.close(first)
    second = make_map(backend)
    assert map_id(backend, second) > first_id
    backend.close(second)


# -- OBJ_GET_INFO_BY_FD -----------------------------------------------------------------------
MAP_INFO_SIZE = 104
"""sizeof(struct bpf_map_info) on 6.18 (hash and hash_size came in 6.18)."""


def test_map_info(backend: Backend) -> None:
    fd = make_map(backend, MapType.HASH, max_entries=8, name=b"objects_map")
    info = BpfMapInfo()
    assert info_of(backend, fd, info) == 0
    assert (info.type, info.key_size, info.value_size, info.max_entries) == (1, 4, 4, 8)
    assert info.name == b"objects_map"
    assert info.id == map_id(backend, fd) > 0
    backend.close(fd)


@pytest.mark.parametrize(
    ("info_len", "nonzero_at", "expected"),
    [
        (MAP_INFO_SIZE + 96, MAP_INFO_SIZE + 46, "E2BIG"),  # a byte beyond the kernel's struct
        (MAP_INFO_SIZE + 96, 40, (0, MAP_INFO_SIZE)),  # ifindex: kept, harmless
        (MAP_INFO_SIZE + 96, MAP_INFO_SIZE - 5, "EINVAL"),  # hash_size without hash
        (MAP_INFO_SIZE + 96, MAP_INFO_SIZE - 1, "E2BIG"),  # the struct's tail padding
        (MAP_INFO_SIZE - 2, MAP_INFO_SIZE - 4, "E2BIG"),
        (MAP_INFO_SIZE - 4, MAP_INFO_SIZE - 4, (0, MAP_INFO_SIZE - 4)),  # beyond info_len
        (MAP_INFO_SIZE + 96, None, (0, MAP_INFO_SIZE)),
        (4096, None, (0, MAP_INFO_SIZE)),
        (4097, None, "E2BIG"),  # more than a page
        (0, None, (0, 0)),
        (4, None, (0, 4)),
    ],
)
def test_info_len_rules(
    backend: Backend, info_len: int, nonzero_at: int | None, expected: object
) -> None:
    fd = make_map(backend)
    buf = ctypes.create_string_buffer(4200)
    if nonzero_at is not None:
        buf[nonzero_at] = b"x"
    result = info_call(backend, fd, buf, info_len)
    assert (result if isinstance(expected, tuple) else result[0]) == expected
    backend.close(fd)


def test_info_copies_back_only_info_len_bytes(backend: Backend) -> None:
    fd = make_map(backend)
    buf = (ctypes.c_uint8 * 8)(*[0xAA] * 8)
    assert info_of(backend, fd, buf, 4) == 0
    assert bytes(buf) == b"\x02\x00\x00\x00" + b"\xaa" * 4  # type ARRAY, the rest untouched
    backend.close(fd)


def test_map_info_keeps_the_callers_unset_fields(backend: Backend) -> None:
    """6.18 reads the caller's struct first: fields it does not set keep the caller's bytes."""
    fd = make_map(backend)
    buf = ctypes.create_string_buffer(b"\x77" * 88 + b"\0" * 16, MAP_INFO_SIZE)
    assert info_of(backend, fd, buf) == 0
    raw = buf.raw
    assert raw[40:44] == b"\x77" * 4  # ifindex
    assert raw[44:48] == b"\0" * 4  # btf_vmlinux_value_type_id is always set
    assert raw[48:80] == b"\x77" * 32  # netns_dev, netns_ino, btf ids, _pad0
    assert raw[80:88] == b"\0" * 8  # map_extra
    backend.close(fd)


@pytest.mark.parametrize(
    ("map_type", "freeze", "hash_size", "with_buffer", "expected"),
    [
        (MapType.ARRAY, False, 32, True, "EPERM"),
        (MapType.HASH, False, 20, True, "EINVAL"),
        (MapType.ARRAY, False, 20, True, "EINVAL"),
        (MapType.ARRAY, False, 32, False, "EINVAL"),
        (MapType.HASH, False, 32, True, "EINVAL"),
        (MapType.ARRAY, True, 32, True, 0),
    ],
)
def test_map_info_hash(
    backend: Backend,
    map_type: MapType,
    freeze: bool,
    hash_size: int,
    with_buffer: bool,
    expected: object,
) -> None:
    fd = make_map(backend, map_type, max_entries=2)
    if freeze:
        assert bpf(backend, BpfCmd.MAP_FREEZE, MapElemAttr(map_fd=fd)) == 0
    digest = ctypes.create_string_buffer(32)
    buf = ctypes.create_string_buffer(MAP_INFO_SIZE)
    struct.pack_into("<QI", buf, 88, ctypes.addressof(digest) if with_buffer else 0, hash_size)
    assert info_of(backend, fd, buf) == expected
    if expected == 0:
        assert digest.raw == hashlib.sha256(b"\0" * 16).digest()
    backend.close(fd)


@pytest.mark.parametrize("fd", [999, 0xFFFFFFFF])
def test_info_of_a_closed_fd_is_ebadfd(backend: Backend, fd: int) -> None:
    assert info_of(backend, fd, BpfMapInfo()) == "EBADFD"


def test_info_of_a_non_bpf_fd_is_einval(backend: Backend) -> None:
    efd = os.eventfd(0)
    try:
        assert info_of(backend, efd, BpfMapInfo()) == "EINVAL"
    finally:
        os.close(efd)


@pytest.mark.parametrize("address", [0, 8])
def test_info_bad_pointer_is_efault(backend: Backend, address: int) -> None:
    fd = make_map(backend)
    assert info_call(backend, fd, BpfMapInfo(), 80, address) == ("EFAULT", 80)
    backend.close(fd)


# -- fdinfo -----------------------------------------------------------------------------------
def test_map_fdinfo(backend: Backend) -> None:
    fd = make_map(backend, MapType.HASH, max_entries=4)
    lines = fdinfo(backend, fd)
    assert fdinfo_keys(backend, fd)[:4] == ["pos", "flags", "mnt_id", "ino"]
    assert lines["pos"] == "0" and lines["flags"] == "02000002"
    assert lines["map_type"] == "1" and lines["max_entries"] == "4"
    assert lines["map_id"] == str(map_id(backend, fd))
    backend.close(fd)


# -- ENABLE_STATS -----------------------------------------------------------------------------
@pytest.mark.parametrize("stats_type", [1, 2, 0xFFFFFFFF])
def test_enable_stats_unknown_type(backend: Backend, stats_type: int) -> None:
    assert bpf(backend, BpfCmd.ENABLE_STATS, EnableStatsAttr(type=stats_type)) == "EINVAL"


def test_enable_stats_fd(backend: Backend) -> None:
    fd = ok(bpf(backend, BpfCmd.ENABLE_STATS, EnableStatsAttr(type=0)))
    assert fdinfo(backend, fd) == {"pos": "0", "flags": "02000000"}
    assert info_of(backend, fd, BpfMapInfo()) == "EINVAL"
    if isinstance(backend, SimBackend):
        assert backend.kernel.stats_enabled == 1
    backend.close(fd)
    if isinstance(backend, SimBackend):
        assert backend.kernel.stats_enabled == 0


def test_enable_stats_counts_each_fd(sim_factory: object) -> None:
    make = sim_factory
    assert callable(make)
    sim: SimBackend = make()
    fds = [ok(bpf(sim, BpfCmd.ENABLE_STATS, EnableStatsAttr(type=0))) for _ in range(3)]
    assert sim.kernel.stats_enabled == 3
    sim.close(fds.pop())
    assert sim.kernel.stats_enabled == 2
    for fd in fds:
        sim.close(fd)
    assert sim.kernel.stats_enabled == 0
    assert sim.kernel.live_objects() == {}


def test_sim_fdinfo_of_unknown_fd_is_enoent() -> None:
    sim = SimBackend()
    with pytest.raises(OSError) as caught:
        sim.read_file("/proc/self/fdinfo/99999")
    assert caught.value.errno == errno.ENOENT


def test_stats_sysctl_reads_its_own_setting(backend: Backend) -> None:
    """bpf_stats_enabled reads the sysctl's setting: 0 while only a stats fd is open."""
    path = "/proc/sys/kernel/bpf_stats_enabled"
    if backend.read_file(path) != b"0\n":
        pytest.skip("kernel.bpf_stats_enabled is on")
    fd = ok(bpf(backend, BpfCmd.ENABLE_STATS, EnableStatsAttr(type=0)))
    assert backend.read_file(path) == b"0\n"
    backend.close(fd)


def test_sim_stats_sysctl(sim_factory: object) -> None:
    make = sim_factory
    assert callable(make)
    sim: SimBackend = make()
    path = "/proc/sys/kernel/bpf_stats_enabled"
    sim.write_file(path, b"1\n")
    assert (sim.read_file(path), sim.kernel.stats_enabled) == (b"1\n", 1)
    sim.write_file(path, b"1\n")
    assert sim.kernel.stats_enabled == 1
    with pytest.raises(OSError) as caught:
        sim.write_file(path, b"2\n")
    assert caught.value.errno == errno.EINVAL
    sim.write_file(path, b"0\n")
    assert (sim.read_file(path), sim.kernel.stats_enabled) == (b"0\n", 0)
    unprivileged: SimBackend = make(privileges="cap_bpf")
    with pytest.raises(OSError) as caught:
        unprivileged.write_file(path, b"1\n")
    assert caught.value.errno == errno.EPERM
