"""Simulator-only map behaviour: version profiles (5.4, 5.10, 5.15), privileges, CPU counts, the
program-side API (value_view, update_from_prog), the plain LRU order, and references held by
maps of objects. Raw bpf() calls through SimBackends made by `sim_factory`."""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable

import pytest
from maps_support import (
    Maps,
    batch,
    fdinfo,
    lookup,
    lookup_and_delete,
    lpm_key,
    next_key,
    update,
)

from bpfsys.abi import BpfCmd, MapFlag, MapType
from kernelsim.backend import SimBackend
from kernelsim.maps.array import ArrayMap, PercpuArrayMap
from kernelsim.maps.base import BpfMap
from kernelsim.maps.hash import HashMap, LruHashMap
from kernelsim.maps.lpm_trie import LpmTrieMap

SimFactory = Callable[..., SimBackend]


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def the_map(sim: SimBackend, fd: int) -> BpfMap:
    return sim.kernel.fds.get(fd, BpfMap)


# -- version profiles ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("version", "shape", "expected"),
    [
        ("5.4", (MapType.BLOOM_FILTER, 0, 4, 10, 0), "EINVAL"),
        ("5.4", (MapType.RINGBUF, 0, 0, 4096, 0), "EINVAL"),
        ("5.4", (MapType.ARRAY, 4, 4, 10, MapFlag.MMAPABLE), "EINVAL"),
        ("5.4", (MapType.PERF_EVENT_ARRAY, 4, 4, 10, MapFlag.PRESERVE_ELEMS), "EINVAL"),
        ("5.10", (MapType.BLOOM_FILTER, 0, 4, 10, 0), "EINVAL"),
        ("5.10", (MapType.RINGBUF, 0, 0, 4096, 0), 0),
        ("5.15", (MapType.BLOOM_FILTER, 0, 4, 10, 0), "EINVAL"),
        ("6.1", (MapType.BLOOM_FILTER, 0, 4, 10, 0), 0),
    ],
)
def test_map_types_and_flags_by_version(
    sim_factory: SimFactory, version: str, shape: tuple[int, ...], expected: int | str
) -> None:
    maps = Maps(sim_factory(version=version))
    result = maps.create(*shape)
    assert result == expected if isinstance(expected, str) else isinstance(result, int)


def test_5_4_has_no_batches_nor_map_extra(sim_factory: SimFactory) -> None:
    sim = sim_factory(version="5.4")
    maps = Maps(sim)
    fd = maps.new(MapType.HASH, 8, 8, 4)
    out = batch(sim, BpfCmd.MAP_LOOKUP_BATCH, fd, 4, key_room=32, value_room=32)
    assert (out.result, out.count) == ("EINVAL", 4)
    assert maps.create(MapType.HASH, 8, 8, 4, map_extra=1) == "EINVAL"
    assert "map_extra" not in fdinfo(sim, fd)


@pytest.mark.parametrize(("version", "expected"), [("5.10", "ENOTSUPP"), ("5.15", 0)])
def test_hash_lookup_and_delete_since_5_14(
    sim_factory: SimFactory, version: str, expected: int | str
) -> None:
    sim = sim_factory(version=version)
    fd = Maps(sim).new(MapType.HASH, 8, 8, 4)
    assert update(sim, fd, u64(1), u64(2)) == 0
    assert lookup_and_delete(sim, fd, u64(1), 8)[0] == expected
    queue = Maps(sim).new(MapType.QUEUE, 0, 8, 4)
    assert update(sim, queue, None, u64(3)) == 0
    assert lookup_and_delete(sim, queue, None, 8) == (0, u64(3))


def test_memlock_before_6_4_is_the_footprint(sim_factory: SimFactory) -> None:
    sim = sim_factory(version="5.15")
    fd = Maps(sim).new(MapType.HASH, 8, 8, 1000)
    assert fdinfo(sim, fd)["memlock"] == str(4 * 4096)  # round_up(1000 * 16, PAGE_SIZE)


# -- privileges ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("privileges", "disabled", "shape", "expected"),
    [
        ("unprivileged", 2, (MapType.ARRAY, 4, 4, 1, 0), "EPERM"),
        ("unprivileged", 2, (MapType.ARRAY, 8, 4, 1, 0), "EINVAL"),  # attr checks come first
        ("unprivileged", 0, (MapType.ARRAY, 4, 4, 1, 0), 0),
        ("unprivileged", 0, (MapType.HASH, 4, 4, 1, 0), 0),
        ("unprivileged", 0, (MapType.LRU_HASH, 4, 4, 1, 0), "EPERM"),
        ("unprivileged", 0, (MapType.QUEUE, 0, 4, 1, 0), "EPERM"),
        ("unprivileged", 0, (MapType.LPM_TRIE, 4, 4, 1, 0), "EPERM"),  # its checks come after
        ("unprivileged", 0, (MapType.ARRAY, 4, 4, (1 << 31) + 1, 0), "E2BIG"),
        ("unprivileged", 0, (MapType.HASH, 4, 4, 1, MapFlag.ZERO_SEED), "EPERM"),
        ("cap_bpf", 2, (MapType.LRU_HASH, 4, 4, 1, 0), 0),
        ("cap_bpf", 2, (MapType.HASH, 4, 4, 1, MapFlag.ZERO_SEED), "EPERM"),
        ("root", 2, (MapType.HASH, 4, 4, 1, MapFlag.ZERO_SEED), 0),
    ],
)
def test_privileges(
    sim_factory: SimFactory,
    privileges: str,
    disabled: int,
    shape: tuple[int, ...],
    expected: int | str,
) -> None:
    sim = sim_factory(privileges=privileges, unprivileged_bpf_disabled=disabled)
    result = Maps(sim).create(*shape)
    assert result == expected if isinstance(expected, str) else isinstance(result, int)


def test_offload_needs_cap_sys_admin(sim_factory: SimFactory) -> None:
    sim = sim_factory(privileges="cap_bpf")
    assert Maps(sim).create(MapType.ARRAY, 4, 4, 1, map_ifindex=1) == "EPERM"


@pytest.mark.parametrize(("version", "expected"), [("5.4", "EPERM"), ("6.18", 0)])
def test_unprivileged_element_commands(
    sim_factory: SimFactory, version: str, expected: int | str
) -> None:
    """Before 6.5 every bpf() command was EPERM for the unprivileged while the sysctl was set;
    since then holding the fd is enough."""
    sim = sim_factory(version=version, privileges="unprivileged", unprivileged_bpf_disabled=0)
    fd = Maps(sim).new(MapType.ARRAY, 4, 4, 1)
    sim.kernel.sysctl["unprivileged_bpf_disabled"] = 1
    assert update(sim, fd, u32(0), u32(5)) == expected
    assert lookup(sim, fd, u32(0), 4)[0] == expected


# -- CPUs ----------------------------------------------------------------------------------------
def test_percpu_layout_with_4_cpus(sim_factory: SimFactory) -> None:
    sim = sim_factory(cpus=4)
    maps = Maps(sim)
    fd = maps.new(MapType.PERCPU_HASH, 8, 4, 4)
    image = b"".join(bytes([cpu]) * 4 + b"pad!" for cpu in range(4))
    assert update(sim, fd, u64(1), image) == 0
    assert lookup(sim, fd, u64(1), 32) == (0, image)
    bpf_map = the_map(sim, fd)
    assert bpf_map.syscall_value_size == 32
    view = bpf_map.value_view(u64(1), 3)
    assert view is not None and bytes(view) == b"\x03" * 4
    view[:] = b"WXYZ"
    assert lookup(sim, fd, u64(1), 32)[1][24:32] == b"WXYZpad!"
    array = maps.new(MapType.PERCPU_ARRAY, 4, 12, 2)
    assert the_map(sim, array).syscall_value_size == 64
    assert fdinfo(sim, array)["memlock"] == str(312 + 2 * 8 + 2 * 16 * 4)


def test_lru_per_cpu_lists_round_to_the_cpus(sim_factory: SimFactory) -> None:
    sim = sim_factory(cpus=4)
    fd = Maps(sim).new(MapType.LRU_HASH, 8, 8, 5, MapFlag.NO_COMMON_LRU)
    assert fdinfo(sim, fd)["max_entries"] == "8"


# -- the program side ----------------------------------------------------------------------------
def test_hash_value_view_aliases_the_element(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    fd = Maps(sim).new(MapType.HASH, 8, 8, 4)
    bpf_map = the_map(sim, fd)
    assert isinstance(bpf_map, HashMap)
    assert bpf_map.value_view(u64(1), 0) is None
    assert update(sim, fd, u64(1), u64(10)) == 0
    view = bpf_map.value_view(u64(1), 0)
    assert view is not None and not view.readonly
    view[:] = u64(11)
    assert lookup(sim, fd, u64(1), 8) == (0, u64(11))
    assert update(sim, fd, u64(1), u64(12)) == 0
    assert bytes(view) == u64(12)  # updates write in place


def test_update_from_prog_on_a_percpu_hash(sim_factory: SimFactory) -> None:
    sim = sim_factory(cpus=2)
    fd = Maps(sim).new(MapType.PERCPU_HASH, 8, 8, 4)
    bpf_map = the_map(sim, fd)
    bpf_map.update_from_prog(u64(1), u64(7), 0, 1)
    assert lookup(sim, fd, u64(1), 16) == (0, bytes(8) + u64(7))  # other CPUs read zeros
    bpf_map.update_from_prog(u64(1), u64(9), 0, 0)
    assert lookup(sim, fd, u64(1), 16) == (0, u64(9) + u64(7))
    with pytest.raises(OSError) as exc:
        bpf_map.update_from_prog(u64(1), u64(9), 1, 0)
    assert exc.value.errno == 17  # EEXIST
    bpf_map.delete_from_prog(u64(1))
    assert lookup(sim, fd, u64(1), 16)[0] == "ENOENT"


def test_array_value_views(sim_factory: SimFactory) -> None:
    sim = sim_factory(cpus=2)
    maps = Maps(sim)
    array = the_map(sim, maps.new(MapType.ARRAY, 4, 4, 2))
    assert isinstance(array, ArrayMap)
    view = array.value_view(u32(1), 0)
    assert view is not None and len(view) == 4
    view[:] = b"abcd"
    assert array.lookup(u32(1)) == b"abcd"
    assert array.value_view(u32(2), 0) is None
    percpu = the_map(sim, maps.new(MapType.PERCPU_ARRAY, 4, 4, 2))
    assert isinstance(percpu, PercpuArrayMap)
    percpu.update_from_prog(u32(0), b"wxyz", 0, 1)
    assert percpu.lookup(u32(0)) == bytes(8) + b"wxyz" + bytes(4)


def test_mmapable_array_view_is_the_mapping(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    fd = Maps(sim).new(MapType.ARRAY, 4, 8, 4, MapFlag.MMAPABLE)
    mapping = sim.mmap(fd, 4096, mmap.PROT_READ, mmap.MAP_SHARED, 0)
    view = the_map(sim, fd).value_view(u32(3), 0)
    assert view is not None
    view[:] = b"ZZZZZZZZ"
    assert bytes(memoryview(mapping)[24:32]) == b"ZZZZZZZZ"
    sim.munmap(mapping)


def test_lpm_value_view_is_the_longest_match(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    fd = Maps(sim).new(MapType.LPM_TRIE, 8, 4, 4, MapFlag.NO_PREALLOC)
    assert update(sim, fd, lpm_key(8, 10, 0, 0, 0), b"net8") == 0
    trie = the_map(sim, fd)
    assert isinstance(trie, LpmTrieMap)
    view = trie.value_view(lpm_key(32, 10, 9, 9, 9), 0)
    assert view is not None and bytes(view) == b"net8"
    assert trie.value_view(lpm_key(32, 11, 0, 0, 0), 0) is None


# -- the plain LRU -------------------------------------------------------------------------------
def test_lru_evicts_the_least_recently_used(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    fd = Maps(sim).new(MapType.LRU_HASH, 8, 8, 3)
    lru = the_map(sim, fd)
    assert isinstance(lru, LruHashMap)
    for key in (1, 2, 3):
        assert update(sim, fd, u64(key), u64(key)) == 0
    assert update(sim, fd, u64(1), u64(10)) == 0  # an update makes 1 the most recent
    assert lookup(sim, fd, u64(2), 8)[0] == 0  # a syscall lookup does not
    assert update(sim, fd, u64(4), u64(4)) == 0
    assert lookup(sim, fd, u64(2), 8)[0] == "ENOENT"
    assert lru.value_view(u64(3), 0) is not None  # a program's lookup does
    assert update(sim, fd, u64(5), u64(5)) == 0
    assert [lookup(sim, fd, u64(k), 8)[0] for k in (1, 3, 4, 5)] == ["ENOENT", 0, 0, 0]


def test_lru_failed_update_on_a_full_map_still_evicts(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    fd = Maps(sim).new(MapType.LRU_HASH, 8, 8, 2)
    assert update(sim, fd, u64(1), u64(1)) == 0
    assert update(sim, fd, u64(2), u64(2)) == 0
    assert update(sim, fd, u64(2), u64(3), 1) == "EEXIST"
    assert [lookup(sim, fd, u64(k), 8)[0] for k in (1, 2)] == ["ENOENT", 0]


# -- references held by maps ---------------------------------------------------------------------
def test_map_of_maps_keeps_its_inner_maps(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    maps = Maps(sim)
    template = maps.new(MapType.ARRAY, 4, 4, 1)
    outer = maps.new(MapType.HASH_OF_MAPS, 4, 4, 2, inner_map_fd=template)
    inner = maps.new(MapType.ARRAY, 4, 4, 1)
    assert update(sim, outer, u32(1), u32(inner)) == 0
    maps.close(inner)
    maps.close(template)
    assert sim.kernel.live_objects()["ArrayMap"] == 1
    assert next_key(sim, outer, None, 4) == (0, u32(1))
    maps.close(outer)
    assert sim.kernel.live_objects() == {}


def test_released_mmapable_array_closes_its_memfd(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    maps = Maps(sim)
    fd = maps.new(MapType.ARRAY, 4, 4, 1, MapFlag.MMAPABLE)
    array = the_map(sim, fd)
    assert isinstance(array, ArrayMap)
    memfd = array.memfd
    os.fstat(memfd)
    maps.close(fd)
    with pytest.raises(OSError):
        os.fstat(memfd)
