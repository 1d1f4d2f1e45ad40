"""Simulator-only tests of the map types that hold kernel things: privileges and kernel versions,
bpf_get_stackid's side of STACK_TRACE maps, and random attrs and values (only OSError escapes,
nothing outlives its fds)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
from collections.abc import Callable, Iterator

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from maps_support import (
    Maps,
    all_keys,
    delete,
    fdinfo,
    lookup,
    lookup_and_delete,
    mount_of,
    next_key,
)

from bpfsys import bpf
from bpfsys.abi import MapElemAttr, MapFlag, MapType, ProgType
from bpfsys.asm import assemble_text
from kernelsim import SimBackend
from kernelsim.maps.stack_trace import FAST_STACK_CMP, REUSE_STACKID, StackTraceMap

SimFactory = Callable[..., SimBackend]
NEW_TYPES = [
    MapType.STACK_TRACE,
    MapType.CGROUP_ARRAY,
    MapType.DEVMAP,
    MapType.DEVMAP_HASH,
    MapType.CPUMAP,
    MapType.XSKMAP,
    MapType.SOCKMAP,
    MapType.SOCKHASH,
]

FOUR_BYTE_VALUES = frozenset({MapType.XSKMAP, MapType.CGROUP_ARRAY})


def k(index: int) -> bytes:
    return index.to_bytes(4, "little")


@pytest.mark.parametrize(
    ("privileges", "map_type", "expected"),
    [
        ("cap_bpf", MapType.STACK_TRACE, 0),
        ("cap_bpf", MapType.CPUMAP, 0),
        ("cap_bpf", MapType.SOCKMAP, "EPERM"),
        ("cap_bpf", MapType.SOCKHASH, "EPERM"),
        ("cap_bpf", MapType.DEVMAP, "EPERM"),
        ("cap_bpf", MapType.DEVMAP_HASH, "EPERM"),
        ("cap_bpf", MapType.XSKMAP, "EPERM"),
        ("cap_bpf", MapType.CGROUP_ARRAY, 0),
        ("unprivileged", MapType.CGROUP_ARRAY, 0),
        ("unprivileged", MapType.STACK_TRACE, "EPERM"),
        ("unprivileged", MapType.CPUMAP, "EPERM"),
    ],
)
def test_privileges(
    sim_factory: SimFactory, privileges: str, map_type: MapType, expected: object
) -> None:
    sim = sim_factory(privileges=privileges, unprivileged_bpf_disabled=0)
    value_size = 8 if map_type == MapType.STACK_TRACE else 4
    result = Maps(sim).create(map_type, 4, value_size, 2)
    assert (0 if isinstance(result, int) else result) == expected


def test_alloc_checks_come_after_the_privilege_check(sim_factory: SimFactory) -> None:
    """DEVMAP checks its attrs in map_alloc_check (before the capability), the others in
    map_alloc (after it)."""
    sim = sim_factory(privileges="cap_bpf")
    maps = Maps(sim)
    assert maps.create(MapType.DEVMAP, 4, 12, 2) == "EINVAL"
    assert maps.create(MapType.SOCKMAP, 4, 12, 2) == "EPERM"
    assert maps.create(MapType.XSKMAP, 8, 4, 2) == "EPERM"
    unprivileged = Maps(sim_factory(privileges="unprivileged", unprivileged_bpf_disabled=0))
    assert unprivileged.create(MapType.STACK_TRACE, 4, 12, 2) == "EPERM"
    assert unprivileged.create(MapType.CGROUP_ARRAY, 4, 8, 2) == "EINVAL"


@pytest.mark.parametrize(
    ("version", "map_type", "value_size", "expected"),
    [
        ("5.4", MapType.DEVMAP, 8, "EINVAL"),
        ("5.8", MapType.DEVMAP, 8, 0),
        ("5.8", MapType.CPUMAP, 8, "EINVAL"),
        ("5.9", MapType.CPUMAP, 8, 0),
        ("5.4", MapType.SOCKMAP, 8, "EINVAL"),
        ("5.10", MapType.SOCKHASH, 8, 0),
        ("5.4", MapType.DEVMAP_HASH, 4, 0),
    ],
)
def test_value_sizes_by_version(
    sim_factory: SimFactory, version: str, map_type: MapType, value_size: int, expected: object
) -> None:
    result = Maps(sim_factory(version=version)).create(map_type, 4, value_size, 2)
    assert (0 if isinstance(result, int) else result) == expected


@pytest.mark.parametrize(("version", "flags"), [("5.4", 0), ("5.8", MapFlag.RDONLY_PROG)])
def test_devmap_implied_flag_by_version(sim_factory: SimFactory, version: str, flags: int) -> None:
    sim = sim_factory(version=version)
    fd = Maps(sim).new(MapType.DEVMAP, 4, 4, 2)
    assert int(fdinfo(sim, fd)["map_flags"], 16) == flags


def stack_map(sim: SimBackend, max_entries: int = 4, value_size: int = 32) -> int:
    fd = Maps(sim).new(MapType.STACK_TRACE, 4, value_size, max_entries)
    return fd


def stack_object(sim: SimBackend, fd: int) -> StackTraceMap:
    obj = sim.kernel.fds.get(fd, StackTraceMap)
    return obj


def test_stack_ids_recorded_by_get_stackid(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    fd = stack_map(sim)
    stacks = stack_object(sim, fd)
    first = stacks.get_stackid([0x1000, 0x2000, 0x3000], 0)
    assert 0 <= first < 4
    assert stacks.get_stackid([0x1000, 0x2000, 0x3000], 0) == first  # the same stack again
    frames = b"".join(ip.to_bytes(8, "little") for ip in (0x1000, 0x2000, 0x3000))
    assert lookup(sim, fd, k(first), 32) == (0, frames + bytes(8))
    skipped = stacks.get_stackid([0x1000, 0x2000, 0x3000], 1)  # skip one frame
    assert skipped >= 0
    assert sorted(all_keys(sim, fd, 4)) == sorted({k(first), k(skipped)})
    assert stacks.get_stackid([0x1], 1) == -14  # EFAULT: nothing left after skipping
    assert stacks.get_stackid([0x1], 1 << 11) == -22  # EINVAL: unknown flag
    assert next_key(sim, fd, k(9), 4)[0] == 0  # out of range: from the first id
    assert delete(sim, fd, k(first)) == 0
    assert lookup(sim, fd, k(first), 32)[0] == "ENOENT"
    assert lookup_and_delete(sim, fd, k(skipped), 32)[0] == 0
    assert all_keys(sim, fd, 4) == []


def test_stack_id_collisions_and_a_full_map(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    fd = stack_map(sim, max_entries=1, value_size=8)  # one id: every stack collides
    stacks = stack_object(sim, fd)
    assert stacks.get_stackid([0xA], 0) == 0
    assert stacks.get_stackid([0xB], 0) == -17  # EEXIST
    assert stacks.get_stackid([0xB], REUSE_STACKID) == -12  # ENOMEM: no free element
    assert delete(sim, fd, k(0)) == 0
    assert stacks.get_stackid([0xB], 0) == 0
    two = stack_object(sim, stack_map(sim, max_entries=2, value_size=8))
    results = [two.get_stackid([ip], 0) for ip in range(1, 50)]
    assert set(results) == {0, 1, -17}  # each id taken once, later stacks collide
    stored = results.index(0) + 1
    assert two.get_stackid([stored], FAST_STACK_CMP) == 0


@pytest.mark.parametrize(("version", "expected"), [("6.12", "ENOTSUPP"), ("6.18", "ENOENT")])
def test_stack_trace_lookup_and_delete_by_version(
    sim_factory: SimFactory, version: str, expected: str
) -> None:
    sim = sim_factory(version=version)
    assert lookup_and_delete(sim, stack_map(sim), k(0), 32)[0] == expected


# -- random attrs and values ------------------------------------------------------------------
@pytest.fixture(scope="module")
def host_fds() -> Iterator[list[int]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    accepted = listener.accept()[0]
    xdp = socket.socket(44, socket.SOCK_RAW)
    dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    made = [listener, client, accepted, xdp, dgram]
    files = [os.open("/etc/hostname", os.O_RDONLY)]
    cgroup2 = mount_of("cgroup2")
    if cgroup2 is not None:
        with contextlib.suppress(OSError):
            files.append(os.open(cgroup2, os.O_RDONLY))
    yield [s.fileno() for s in made] + files
    for sock in made:
        sock.close()
    for fd in files:
        os.close(fd)


@given(data=st.data())
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_random_values_only_raise_oserror(data: st.DataObject, host_fds: list[int]) -> None:
    sim = SimBackend()
    maps = Maps(sim)
    prog = bpf.prog_load(ProgType.XDP, assemble_text("mov %r0, 2\nexit"), backend=sim)
    fds = [
        prog.fileno(),
        *(
            result
            for map_type in NEW_TYPES
            if isinstance(
                result := maps.create(
                    map_type,
                    data.draw(st.sampled_from([0, 4, 8])),
                    data.draw(st.sampled_from([0, 4, 8, 16])),
                    data.draw(st.integers(0, 6)),
                    data.draw(st.sampled_from([0, MapFlag.NUMA_NODE, MapFlag.RDONLY, 1 << 5])),
                ),
                int,
            )
        ),
    ]
    for map_type in NEW_TYPES:
        fds.append(maps.new(map_type, 4, 4 if map_type in FOUR_BYTE_VALUES else 8, 4))
    word = st.one_of(st.sampled_from([*fds, *host_fds, 0, 1, 9999]), st.integers(0, 2**32 - 1))
    key = ctypes.create_string_buffer(16)
    value = ctypes.create_string_buffer(16)
    for _ in range(data.draw(st.integers(1, 12))):
        cmd = data.draw(
            st.sampled_from([1, 2, 3, 4, 21])  # lookup, update, delete, next key, lookup&delete
        )
        key.raw = data.draw(st.sampled_from([0, 1, 3, 7])).to_bytes(4, "little") + bytes(12)
        value.raw = (
            data.draw(word).to_bytes(4, "little") + data.draw(word).to_bytes(4, "little")
        ).ljust(16, b"\0")
        attr = MapElemAttr(
            map_fd=data.draw(st.sampled_from(fds)),
            key=ctypes.addressof(key),
            value=ctypes.addressof(value),
            flags=data.draw(st.sampled_from([0, 1, 2, 3, 4])),
        )
        try:
            sim.bpf(cmd, attr, ctypes.sizeof(attr))
        except OSError:
            continue
    maps.close_all()
    prog.close()
    assert sim.kernel.live_objects() == {}
