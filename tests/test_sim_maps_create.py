"""BPF_MAP_CREATE on every backend: the errno of each invalid attr, and for valid ones what fdinfo
reports (max_entries as the map keeps it, map_flags, memlock), measured on Linux 6.18 with 2
possible CPUs. The same assertions hold on the simulator and on the live kernel."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from typing import Any

import pytest
from maps_support import Maps, fdinfo, lpm_key, room, update

from bpfsys.abi import MapFlag, MapType
from bpfsys.backend import Backend

H, A, PA, PEA = MapType.HASH, MapType.ARRAY, MapType.PROG_ARRAY, MapType.PERF_EVENT_ARRAY
PCA, Q = MapType.PERCPU_ARRAY, MapType.QUEUE
NO_PREALLOC, NO_COMMON_LRU, NUMA = MapFlag.NO_PREALLOC, MapFlag.NO_COMMON_LRU, MapFlag.NUMA_NODE
RDONLY, WRONLY, ZERO_SEED = MapFlag.RDONLY, MapFlag.WRONLY, MapFlag.ZERO_SEED
MMAPABLE, INNER_MAP, PRESERVE = MapFlag.MMAPABLE, MapFlag.INNER_MAP, MapFlag.PRESERVE_ELEMS
PROG_BOTH = MapFlag.RDONLY_PROG | MapFlag.WRONLY_PROG

Created = tuple[int, int, int]
"""(max_entries, map_flags, memlock) as fdinfo shows them."""
Case = tuple[tuple[int, int, int, int, int], "str | Created"]

# (map_type, key_size, value_size, max_entries, map_flags) -> errno name or what fdinfo shows.
CREATE_CASES: dict[str, Case] = {
    "hash key 0": ((H, 0, 8, 10, 0), "EINVAL"),
    "hash value 0": ((H, 8, 0, 10, 0), "EINVAL"),
    "hash max 0": ((H, 8, 8, 0, 0), "EINVAL"),
    "hash key+value at the kmalloc limit": ((H, 4194304 - 56, 8, 1, 0), "E2BIG"),
    "hash key+value below the kmalloc limit": ((H, 4194304 - 57, 8, 1, NO_PREALLOC), (1, 1, 912)),
    "hash NO_COMMON_LRU": ((H, 8, 8, 10, NO_COMMON_LRU), "EINVAL"),
    "hash MMAPABLE": ((H, 8, 8, 10, MMAPABLE), "EINVAL"),
    "hash RDONLY is the fd's": ((H, 8, 8, 10, RDONLY), (10, 0, 1936)),
    "hash RDONLY|WRONLY": ((H, 8, 8, 10, RDONLY | WRONLY), "EINVAL"),
    "hash RDONLY_PROG|WRONLY_PROG": ((H, 8, 8, 10, PROG_BOTH), "EINVAL"),
    "hash ZERO_SEED": ((H, 8, 8, 10, ZERO_SEED), (10, 0x40, 1936)),
    "hash INNER_MAP": ((H, 8, 8, 10, INNER_MAP), "EINVAL"),
    "hash PRESERVE_ELEMS": ((H, 8, 8, 10, PRESERVE), "EINVAL"),
    "hash unknown flag bit 13": ((H, 8, 8, 10, 1 << 13), "EINVAL"),
    "hash unknown flag bit 20": ((H, 8, 8, 10, 1 << 20), "EINVAL"),
    "hash 2^28 entries: too many buckets": ((H, 8, 8, 1 << 28, NO_PREALLOC), "E2BIG"),
    "hash 2^31+1 entries": ((H, 8, 8, (1 << 31) + 1, NO_PREALLOC), "E2BIG"),
    "hash 8/8 x100": ((H, 8, 8, 100, 0), (100, 0, 9488)),
    "hash 8/8 x1": ((H, 8, 8, 1, 0), (1, 0, 1120)),
    "hash 16/32 x100": ((H, 16, 32, 100, 0), (100, 0, 12752)),
    "hash NO_PREALLOC empty": ((H, 8, 8, 100, NO_PREALLOC), (100, 1, 2944)),
    "percpu hash 8/8": ((MapType.PERCPU_HASH, 8, 8, 100, 0), (100, 0, 10944)),
    "percpu hash 8/16": ((MapType.PERCPU_HASH, 8, 16, 100, 0), (100, 0, 12544)),
    "percpu hash value 32768": ((MapType.PERCPU_HASH, 8, 32768, 10, 0), (10, 0, 657152)),
    "percpu hash value 32769": ((MapType.PERCPU_HASH, 8, 32769, 10, NO_PREALLOC), "E2BIG"),
    "lru hash": ((MapType.LRU_HASH, 8, 8, 100, 0), (100, 0, 9344)),
    "lru hash NO_PREALLOC": ((MapType.LRU_HASH, 8, 8, 10, NO_PREALLOC), "ENOTSUPP"),
    "lru hash max 0": ((MapType.LRU_HASH, 8, 8, 0, 0), "EINVAL"),
    "lru per-CPU lists round 1 up": ((MapType.LRU_HASH, 8, 8, 1, NO_COMMON_LRU), (2, 2, 1056)),
    "lru per-CPU lists round 3 up": ((MapType.LRU_HASH, 8, 8, 3, NO_COMMON_LRU), (4, 2, 1216)),
    "lru per-CPU lists x100": ((MapType.LRU_HASH, 8, 8, 100, NO_COMMON_LRU), (100, 2, 9344)),
    "lru percpu hash": ((MapType.LRU_PERCPU_HASH, 8, 8, 100, 0), (100, 0, 10944)),
    "array key 8": ((A, 8, 4, 10, 0), "EINVAL"),
    "array value 0": ((A, 4, 0, 10, 0), "EINVAL"),
    "array max 0": ((A, 4, 4, 0, 0), "EINVAL"),
    "array NO_PREALLOC": ((A, 4, 4, 10, NO_PREALLOC), "EINVAL"),
    "array ZERO_SEED": ((A, 4, 4, 10, ZERO_SEED), "EINVAL"),
    "array PRESERVE_ELEMS": ((A, 4, 4, 10, PRESERVE), "EINVAL"),
    "array INNER_MAP": ((A, 4, 4, 10, INNER_MAP), (10, 0x1000, 392)),
    "array value above INT_MAX": ((A, 4, 1 << 31, 1, 0), "E2BIG"),
    "array of a petabyte": ((A, 4, (1 << 31) - 1, 1 << 20, 0), "ENOMEM"),
    "array INNER_MAP|MMAPABLE": ((A, 4, 4, 10, INNER_MAP | MMAPABLE), (10, 0x1400, 8192)),
    "array MMAPABLE x5000": ((A, 4, 4, 5000, MMAPABLE), (5000, 0x400, 45056)),
    "array 4/4 x100": ((A, 4, 4, 100, 0), (100, 0, 1112)),
    "array 4/12 x100": ((A, 4, 12, 100, 0), (100, 0, 1912)),
    "percpu array MMAPABLE": ((MapType.PERCPU_ARRAY, 4, 4, 10, MMAPABLE), "EINVAL"),
    "percpu array INNER_MAP": ((MapType.PERCPU_ARRAY, 4, 4, 10, INNER_MAP), "EINVAL"),
    "percpu array value 32769": ((MapType.PERCPU_ARRAY, 4, 32769, 10, 0), "E2BIG"),
    "percpu array 4/12 x10": ((MapType.PERCPU_ARRAY, 4, 12, 10, 0), (10, 0, 712)),
    "prog array value 8": ((PA, 4, 8, 10, 0), "EINVAL"),
    "prog array RDONLY_PROG": ((PA, 4, 4, 10, MapFlag.RDONLY_PROG), "EINVAL"),
    "prog array MMAPABLE": ((PA, 4, 4, 10, MMAPABLE), "EINVAL"),
    "prog array key 8": ((PA, 8, 4, 10, 0), "EINVAL"),
    "prog array PRESERVE_ELEMS": ((PA, 4, 4, 10, PRESERVE), "EINVAL"),
    "prog array x100": ((PA, 4, 4, 100, 0), (100, 0, 1112)),
    "perf event array PRESERVE_ELEMS": ((PEA, 4, 4, 10, PRESERVE), (10, 0x800, 392)),
    "perf event array value 8": ((PEA, 4, 8, 10, 0), "EINVAL"),
    "perf event array max 0": ((PEA, 4, 4, 0, 0), "EINVAL"),
    "queue key 4": ((MapType.QUEUE, 4, 4, 10, 0), "EINVAL"),
    "queue value 0": ((MapType.QUEUE, 0, 0, 10, 0), "EINVAL"),
    "queue max 0": ((MapType.QUEUE, 0, 4, 0, 0), "EINVAL"),
    "queue NO_PREALLOC": ((MapType.QUEUE, 0, 4, 10, NO_PREALLOC), "EINVAL"),
    "queue ZERO_SEED": ((MapType.QUEUE, 0, 4, 10, ZERO_SEED), "EINVAL"),
    "queue value above KMALLOC_MAX_SIZE": ((MapType.QUEUE, 0, 4194305, 1, 0), "E2BIG"),
    "queue 12 x100": ((MapType.QUEUE, 0, 12, 100, 0), (100, 0, 1524)),
    "stack 4 x100": ((MapType.STACK, 0, 4, 100, 0), (100, 0, 716)),
    "lpm without NO_PREALLOC": ((MapType.LPM_TRIE, 8, 8, 10, 0), "EINVAL"),
    "lpm key 4": ((MapType.LPM_TRIE, 4, 8, 10, NO_PREALLOC), "EINVAL"),
    "lpm key 5": ((MapType.LPM_TRIE, 5, 8, 10, NO_PREALLOC), (10, 1, 0)),
    "lpm key 260": ((MapType.LPM_TRIE, 260, 8, 10, NO_PREALLOC), (10, 1, 0)),
    "lpm key 261": ((MapType.LPM_TRIE, 261, 8, 10, NO_PREALLOC), "EINVAL"),
    "lpm value 0": ((MapType.LPM_TRIE, 8, 0, 10, NO_PREALLOC), "EINVAL"),
    "lpm max 0": ((MapType.LPM_TRIE, 8, 8, 0, NO_PREALLOC), "EINVAL"),
    "lpm ZERO_SEED": ((MapType.LPM_TRIE, 8, 8, 10, NO_PREALLOC | ZERO_SEED), "EINVAL"),
    "bloom key 4": ((MapType.BLOOM_FILTER, 4, 4, 10, 0), "EINVAL"),
    "bloom value 0": ((MapType.BLOOM_FILTER, 0, 0, 10, 0), "EINVAL"),
    "bloom max 0": ((MapType.BLOOM_FILTER, 0, 4, 0, 0), "EINVAL"),
    "bloom NO_PREALLOC": ((MapType.BLOOM_FILTER, 0, 4, 10, NO_PREALLOC), "EINVAL"),
    "bloom ZERO_SEED x10": ((MapType.BLOOM_FILTER, 0, 4, 10, ZERO_SEED), (10, 0x40, 328)),
    "bloom x1000": ((MapType.BLOOM_FILTER, 0, 4, 1000, 0), (1000, 0, 1336)),
    "bloom x1": ((MapType.BLOOM_FILTER, 0, 4, 1, 0), (1, 0, 320)),
    "ringbuf 4097 bytes": ((MapType.RINGBUF, 0, 0, 4097, 0), "EINVAL"),
    "ringbuf half a page": ((MapType.RINGBUF, 0, 0, 2048, 0), "EINVAL"),
    "ringbuf key 4": ((MapType.RINGBUF, 4, 0, 4096, 0), "EINVAL"),
    "ringbuf value 4": ((MapType.RINGBUF, 0, 4, 4096, 0), "EINVAL"),
    "ringbuf NO_PREALLOC": ((MapType.RINGBUF, 0, 0, 4096, NO_PREALLOC), "EINVAL"),
    "ringbuf 0 bytes": ((MapType.RINGBUF, 0, 0, 0, 0), "EINVAL"),
    "ringbuf 8 KiB": ((MapType.RINGBUF, 0, 0, 8192, 0), (8192, 0, 20840)),
    "ringbuf 1 MiB": ((MapType.RINGBUF, 0, 0, 1 << 20, 0), (1 << 20, 0, 1065288)),
    "type 0 (UNSPEC)": ((0, 4, 4, 1, 0), "EINVAL"),
    "type 34 (after ARENA)": ((34, 4, 4, 1, 0), "EINVAL"),
    "type 99": ((99, 4, 4, 1, 0), "EINVAL"),
}

FIELD_CASES: dict[str, tuple[dict[str, Any], str | Created]] = {
    "name alnum _ .": ({"map_name": b"a.b_C9"}, (1, 0, 320)),
    "name with '-'": ({"map_name": b"a-b"}, "EINVAL"),
    "name with a Latin-1 letter": ({"map_name": b"\xe9t\xe9"}, (1, 0, 320)),
    "name 0xff (Latin-1 y umlaut)": ({"map_name": b"\xff"}, (1, 0, 320)),
    "name 0x80 (control)": ({"map_name": b"\x80"}, "EINVAL"),
    "name 0xd7 (multiplication sign)": ({"map_name": b"\xd7"}, "EINVAL"),
    "name of 15": ({"map_name": b"a" * 15}, (1, 0, 320)),
    "name of 16, no NUL": ({"map_name": b"a" * 16}, "EINVAL"),
    "name bytes after the NUL": ({"map_name": b"ab\0-\xff"}, (1, 0, 320)),
    "NUMA node 0": ({"map_flags": NUMA, "numa_node": 0}, (1, 4, 320)),
    "NUMA node 1": ({"map_flags": NUMA, "numa_node": 1}, "EINVAL"),
    "NUMA node -1": ({"map_flags": NUMA, "numa_node": 0xFFFFFFFF}, (1, 4, 320)),
    "numa_node without the flag": ({"numa_node": 7}, (1, 0, 320)),
    "NUMA node for a percpu array": (
        {"map_type": MapType.PERCPU_ARRAY, "map_flags": NUMA},
        "EINVAL",
    ),
    "NUMA node for a percpu hash": ({"map_type": MapType.PERCPU_HASH, "map_flags": NUMA}, "EINVAL"),
    "NUMA node for per-CPU LRU lists": (
        {"map_type": MapType.LRU_HASH, "map_flags": NUMA | NO_COMMON_LRU},
        "EINVAL",
    ),
    "NUMA node for an LRU hash": ({"map_type": MapType.LRU_HASH, "map_flags": NUMA}, (1, 4, 976)),
    "map_extra on a hash": ({"map_type": H, "map_extra": 1}, "EINVAL"),
    "map_ifindex lo on an array": ({"map_ifindex": 1}, "EOPNOTSUPP"),
    "map_ifindex lo on a queue": (
        {"map_type": MapType.QUEUE, "key_size": 0, "map_ifindex": 1},
        "EINVAL",
    ),
    "map_ifindex of no device": ({"map_ifindex": 9999}, "EINVAL"),
    "btf key type without value type": ({"btf_key_type_id": 1}, "EINVAL"),
    "btf value type, btf_fd 0 (stdin)": ({"btf_value_type_id": 1}, "EINVAL"),
    "btf value type, btf_fd not open": ({"btf_value_type_id": 1, "btf_fd": 999}, "EBADF"),
    "btf vmlinux type on an array": ({"btf_vmlinux_value_type_id": 1}, "EINVAL"),
    "token flag, token fd not open": ({"map_flags": 1 << 16, "map_token_fd": 999}, "EBADF"),
    "token flag, token fd 0 (stdin)": ({"map_flags": 1 << 16, "map_token_fd": 0}, "EINVAL"),
    "token fd without the flag": ({"map_token_fd": 5}, (1, 0, 320)),
    "excl_prog_hash_size alone": ({"excl_prog_hash_size": 32}, "EINVAL"),
    "excl_prog_hash of size 0": ({"excl_prog_hash": 0x1000}, "EINVAL"),
    "excl_prog_hash unreadable": ({"excl_prog_hash": 8, "excl_prog_hash_size": 32}, "EFAULT"),
    "inner_map_fd on an array is ignored": ({"inner_map_fd": 9999}, (1, 0, 320)),
}


@pytest.fixture
def maps(backend: Backend) -> Iterator[Maps]:
    made = Maps(backend)
    yield made
    made.close_all()


def shown(backend: Backend, fd: int) -> Created:
    info = fdinfo(backend, fd)
    return int(info["max_entries"]), int(info["map_flags"], 16), int(info["memlock"])


@pytest.mark.parametrize("case", CREATE_CASES, ids=str)
def test_create(maps: Maps, case: str) -> None:
    args, expected = CREATE_CASES[case]
    result = maps.create(*args)
    if isinstance(expected, str):
        assert result == expected
    else:
        assert isinstance(result, int), result
        assert shown(maps.backend, result) == expected


@pytest.mark.parametrize("case", FIELD_CASES, ids=str)
def test_create_fields(maps: Maps, case: str) -> None:
    fields, expected = FIELD_CASES[case]
    shape = {"map_type": A, "key_size": 4, "value_size": 4, "max_entries": 1, **fields}
    result = maps.create(
        shape.pop("map_type"),
        shape.pop("key_size"),
        shape.pop("value_size"),
        shape.pop("max_entries"),
        **shape,
    )
    if isinstance(expected, str):
        assert result == expected
    else:
        assert isinstance(result, int), result
        assert shown(maps.backend, result) == expected


def test_excl_prog_hash_of_32_bytes(maps: Maps) -> None:
    digest = room(32, 0xAB)
    fd = maps.create(A, 4, 4, 1, excl_prog_hash=ctypes.addressof(digest), excl_prog_hash_size=32)
    assert isinstance(fd, int)


def test_fdinfo_lines_in_order(maps: Maps) -> None:
    fd = maps.new(H, 8, 8, 100, map_name=b"counts")
    info = fdinfo(maps.backend, fd)
    assert list(info)[4:] == [
        "map_type",
        "key_size",
        "value_size",
        "max_entries",
        "map_flags",
        "map_extra",
        "memlock",
        "map_id",
        "frozen",
    ]
    assert (info["map_type"], info["key_size"], info["value_size"]) == ("1", "8", "8")
    assert (info["map_flags"], info["map_extra"], info["frozen"]) == ("0x0", "0x0", "0")


@pytest.mark.parametrize(
    ("flags", "fd_flags"), [(0, "02000002"), (RDONLY, "02000000"), (WRONLY, "02000001")]
)
def test_fd_access_mode_in_fdinfo(maps: Maps, flags: int, fd_flags: str) -> None:
    fd = maps.new(A, 4, 4, 1, flags)
    assert fdinfo(maps.backend, fd)["flags"] == fd_flags


def test_memlock_of_a_no_prealloc_hash_grows(maps: Maps) -> None:
    fd = maps.new(H, 8, 24, 100, NO_PREALLOC)
    for key in range(5):
        assert update(maps.backend, fd, key.to_bytes(8, "little"), bytes(24)) == 0
    assert shown(maps.backend, fd)[2] == 2944 + (80 + 8) * 5


def test_memlock_of_a_no_prealloc_percpu_hash_grows(maps: Maps) -> None:
    fd = maps.new(MapType.PERCPU_HASH, 8, 8, 100, NO_PREALLOC)
    for key in range(3):
        assert update(maps.backend, fd, key.to_bytes(8, "little"), bytes(16)) == 0
    assert shown(maps.backend, fd)[2] == 3256


def test_memlock_of_an_lpm_trie_counts_entries_only(maps: Maps) -> None:
    fd = maps.new(MapType.LPM_TRIE, 8, 8, 100, NO_PREALLOC)
    assert update(maps.backend, fd, lpm_key(32, 10, 0, 0, 1), bytes(8)) == 0
    assert shown(maps.backend, fd)[2] == 36
    # 10.1.0.0/24 forces an intermediate node, which memlock does not count.
    assert update(maps.backend, fd, lpm_key(24, 10, 1, 0, 0), bytes(8)) == 0
    assert shown(maps.backend, fd)[2] == 72
