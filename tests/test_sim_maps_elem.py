"""The map element commands on every backend (raw bpf() level): LOOKUP, UPDATE, DELETE,
GET_NEXT_KEY, LOOKUP_AND_DELETE and FREEZE per map type, with the fd's access mode, bad pointers and
bad fds. The same return values, errnos and written-back bytes on the simulator and the live
kernel (6.18, 2 possible CPUs)."""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import random
import struct
from collections.abc import Iterator

import pytest
from maps_support import (
    Maps,
    all_keys,
    batch,
    buf,
    call,
    delete,
    elem,
    fdinfo,
    freeze,
    lookup,
    lookup_and_delete,
    lpm_key,
    next_key,
    room,
    update,
)

from bpfsys.abi import (
    BpfCmd,
    GetIdAttr,
    MapFlag,
    MapType,
    PerfAttrFlag,
    PerfEventAttr,
    PerfSwId,
    PerfType,
    ProgLoadAttr,
    ProgType,
)
from bpfsys.backend import Backend

ANY, NOEXIST, EXIST, LOCK = 0, 1, 2, 4
PERF_FLAG_FD_CLOEXEC = 8
LPM_RANDOM_DIGEST = "cdf062b51387b9175b84f73f731f3bc5fd4bbffb19b3ccf8c0decb5a0072cd32"


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


@pytest.fixture
def maps(backend: Backend) -> Iterator[Maps]:
    made = Maps(backend)
    yield made
    made.close_all()


def load_prog(maps: Maps, prog_type: ProgType = ProgType.SOCKET_FILTER) -> int:
    """A loaded `r0 = 0; exit` program, closed with the maps."""
    insns = buf(bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0]))
    license_ = buf(b"GPL\0")
    attr = ProgLoadAttr(
        prog_type=prog_type,
        insn_cnt=2,
        insns=ctypes.addressof(insns),
        license=ctypes.addressof(license_),
    )
    fd = call(maps.backend, BpfCmd.PROG_LOAD, attr)
    assert isinstance(fd, int), fd
    return maps.adopt(fd)


def perf_event(maps: Maps, inherit: bool = False) -> int:
    """A software BPF_OUTPUT event on CPU 0, closed with the maps."""
    attr = PerfEventAttr(type=PerfType.SOFTWARE, config=PerfSwId.BPF_OUTPUT)
    attr.size = ctypes.sizeof(attr)
    if inherit:
        attr.flags = PerfAttrFlag.INHERIT
    return maps.adopt(maps.backend.perf_event_open(attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC))


def map_id(backend: Backend, fd: int) -> int:
    return int(fdinfo(backend, fd)["map_id"])


# -- hash maps ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("present", "flags", "expected"),
    [
        (False, ANY, 0),
        (False, NOEXIST, 0),
        (False, EXIST, "ENOENT"),
        (True, ANY, 0),
        (True, NOEXIST, "EEXIST"),
        (True, EXIST, 0),
        (True, 3, "EINVAL"),
        (False, 8, "EINVAL"),
        (False, 1 << 32, "EINVAL"),
        (True, LOCK, "EINVAL"),
    ],
)
def test_hash_update_flags(maps: Maps, present: bool, flags: int, expected: int | str) -> None:
    b = maps.backend
    fd = maps.new(MapType.HASH, 8, 8, 4)
    if present:
        assert update(b, fd, u64(1), u64(10)) == 0
    assert update(b, fd, u64(1), u64(20), flags) == expected
    stored = lookup(b, fd, u64(1), 8)
    if expected == 0:
        assert stored == (0, u64(20))
    else:
        assert stored == ((0, u64(10)) if present else ("ENOENT", bytes(8)))


def test_hash_full(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.HASH, 8, 8, 2)
    assert [update(b, fd, u64(k), u64(k)) for k in (1, 2)] == [0, 0]
    assert update(b, fd, u64(3), u64(3)) == "E2BIG"
    assert update(b, fd, u64(3), u64(3), NOEXIST) == "E2BIG"
    assert update(b, fd, u64(3), u64(3), EXIST) == "ENOENT"
    assert update(b, fd, u64(2), u64(5)) == 0  # replacing works on a full map
    assert delete(b, fd, u64(1)) == 0
    assert update(b, fd, u64(3), u64(3)) == 0


def test_hash_lookup_and_delete_commands(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.HASH, 8, 8, 4)
    assert update(b, fd, u64(1), u64(7)) == 0
    assert lookup(b, fd, u64(9), 8) == ("ENOENT", bytes(8))
    assert lookup(b, fd, u64(1), 8, LOCK)[0] == "EINVAL"
    assert lookup(b, fd, u64(1), 8, 1)[0] == "EINVAL"
    assert delete(b, fd, u64(9)) == "ENOENT"
    assert lookup_and_delete(b, fd, u64(1), 8, LOCK)[0] == "EINVAL"
    assert lookup_and_delete(b, fd, u64(1), 8, 1)[0] == "EINVAL"
    assert lookup_and_delete(b, fd, u64(1), 8) == (0, u64(7))
    assert lookup_and_delete(b, fd, u64(1), 8) == ("ENOENT", bytes(8))
    assert delete(b, fd, u64(1)) == "ENOENT"


def test_hash_get_next_key(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.HASH, 8, 8, 16)
    assert next_key(b, fd, None, 8) == ("ENOENT", bytes(8))
    for key in range(5):
        assert update(b, fd, u64(key), u64(key)) == 0
    walk = all_keys(b, fd, 8)
    assert sorted(walk) == [u64(k) for k in range(5)]
    first = next_key(b, fd, None, 8)
    assert first == (0, walk[0])
    assert next_key(b, fd, u64(77), 8) == first  # an absent key restarts from the first
    assert next_key(b, fd, walk[-1], 8) == ("ENOENT", bytes(8))
    assert delete(b, fd, walk[2]) == 0
    assert next_key(b, fd, walk[2], 8) == first  # the deleted current key restarts too


def test_hash_pointers(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.HASH, 8, 8, 4)
    assert update(b, fd, u64(2), u64(2)) == 0
    assert elem(b, BpfCmd.MAP_LOOKUP_ELEM, fd, None, room(8)) == "EFAULT"
    assert elem(b, BpfCmd.MAP_UPDATE_ELEM, fd, None, buf(u64(1))) == "EFAULT"
    assert elem(b, BpfCmd.MAP_UPDATE_ELEM, fd, u64(1), None) == "EFAULT"
    assert elem(b, BpfCmd.MAP_LOOKUP_ELEM, fd, u64(2), None) == "EFAULT"
    assert elem(b, BpfCmd.MAP_LOOKUP_ELEM, fd, u64(9), None) == "ENOENT"  # lookup first
    assert elem(b, BpfCmd.MAP_DELETE_ELEM, fd, None, None) == "EFAULT"
    assert elem(b, BpfCmd.MAP_GET_NEXT_KEY, fd, u64(2), None) == "ENOENT"


@pytest.mark.parametrize(("fd", "expected"), [(9999, "EBADF"), (0, "EINVAL")])
@pytest.mark.parametrize(
    "cmd",
    [
        BpfCmd.MAP_LOOKUP_ELEM,
        BpfCmd.MAP_UPDATE_ELEM,
        BpfCmd.MAP_DELETE_ELEM,
        BpfCmd.MAP_GET_NEXT_KEY,
        BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM,
        BpfCmd.MAP_FREEZE,
    ],
    ids=lambda c: c.name,
)
def test_not_a_map_fd(backend: Backend, cmd: BpfCmd, fd: int, expected: str) -> None:
    key = None if cmd == BpfCmd.MAP_FREEZE else u64(1)
    value = None if cmd in (BpfCmd.MAP_DELETE_ELEM, BpfCmd.MAP_FREEZE) else room(8)
    assert elem(backend, cmd, fd, key, value) == expected


@pytest.mark.parametrize(
    ("cmd", "key", "value"),
    [(BpfCmd.MAP_DELETE_ELEM, u64(1), room(8)), (BpfCmd.MAP_FREEZE, u64(1), None)],
    ids=["DELETE with a value", "FREEZE with a key"],
)
def test_fields_after_the_last_one(
    maps: Maps, cmd: BpfCmd, key: bytes, value: ctypes.Array[ctypes.c_char] | None
) -> None:
    """Fields past the command's last one must be zero (CHECK_ATTR), before the fd is looked at."""
    assert elem(maps.backend, cmd, 9999, key, value) == "EINVAL"


def test_percpu_hash_values(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.PERCPU_HASH, 8, 4, 4)
    image = b"abcdEFGHijklMNOP"  # two CPUs, 8-byte slots: the padding is kept
    assert update(b, fd, u64(1), image) == 0
    assert lookup(b, fd, u64(1), 16) == (0, image)
    assert update(b, fd, u64(2), image, LOCK) == "EINVAL"
    assert update(b, fd, u64(1), image, 3) == "EINVAL"
    assert lookup_and_delete(b, fd, u64(1), 16) == (0, image)


def test_lru_hash_never_full(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.LRU_HASH, 8, 8, 16)
    assert [update(b, fd, u64(k), u64(k)) for k in range(40)] == [0] * 40
    present = [k for k in range(40) if lookup(b, fd, u64(k), 8)[0] == 0]
    assert 0 < len(present) <= 16
    assert 39 in present
    assert update(b, fd, u64(99), u64(1), 3) == "EINVAL"
    assert update(b, fd, u64(99), u64(1), LOCK) == "EINVAL"


def test_lru_hash_flags(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.LRU_HASH, 8, 8, 100)
    assert update(b, fd, u64(1), u64(1), EXIST) == "ENOENT"
    assert update(b, fd, u64(1), u64(1), NOEXIST) == 0
    assert update(b, fd, u64(1), u64(2), NOEXIST) == "EEXIST"
    assert update(b, fd, u64(1), u64(3), EXIST) == 0
    assert lookup(b, fd, u64(1), 8) == (0, u64(3))
    assert lookup_and_delete(b, fd, u64(1), 8) == (0, u64(3))


# -- access modes and FREEZE ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (MapFlag.RDONLY, {"update": "EPERM", "lookup": "ENOENT", "delete": "EPERM",
                          "next": "ENOENT", "freeze": "EPERM", "lookup_and_delete": "EPERM"}),
        (MapFlag.WRONLY, {"update": 0, "lookup": "EPERM", "delete": 0,
                          "next": "EPERM", "freeze": 0, "lookup_and_delete": "EPERM"}),
    ],
    ids=["RDONLY", "WRONLY"],
)  # fmt: skip
def test_fd_access_mode(maps: Maps, flags: int, expected: dict[str, int | str]) -> None:
    b = maps.backend
    fd = maps.new(MapType.HASH, 8, 8, 2, flags)
    got = {
        "update": update(b, fd, u64(1), u64(1)),
        "lookup": lookup(b, fd, u64(2), 8)[0],
        "delete": delete(b, fd, u64(1)),
        "next": next_key(b, fd, None, 8)[0],
        "lookup_and_delete": lookup_and_delete(b, fd, u64(1), 8)[0],
        "freeze": freeze(b, fd),
    }
    assert got == expected


def test_freeze(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.HASH, 8, 8, 4)
    assert update(b, fd, u64(1), u64(1)) == 0
    assert freeze(b, fd) == 0
    assert fdinfo(b, fd)["frozen"] == "1"
    assert freeze(b, fd) == "EPERM"  # frozen maps are read-only, even for FREEZE
    assert update(b, fd, u64(2), u64(2)) == "EPERM"
    assert delete(b, fd, u64(1)) == "EPERM"
    assert lookup_and_delete(b, fd, u64(1), 8)[0] == "EPERM"
    assert lookup(b, fd, u64(1), 8) == (0, u64(1))
    assert next_key(b, fd, None, 8) == (0, u64(1))
    out = batch(b, BpfCmd.MAP_UPDATE_BATCH, fd, 1, keys=u64(3), values=u64(3))
    assert (out.result, out.count) == ("EPERM", 1)


# -- arrays --------------------------------------------------------------------------------------
def test_array_commands(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.ARRAY, 4, 8, 3)
    assert update(b, fd, u32(0), b"a" * 8) == 0
    assert update(b, fd, u32(3), b"a" * 8) == "E2BIG"
    assert update(b, fd, u32(0), b"a" * 8, NOEXIST) == "EEXIST"
    assert update(b, fd, u32(5), b"a" * 8, NOEXIST) == "E2BIG"
    assert update(b, fd, u32(1), b"b" * 8, EXIST) == 0
    assert update(b, fd, u32(1), b"b" * 8, 3) == "EINVAL"
    assert update(b, fd, u32(9), b"b" * 8, LOCK) == "EINVAL"
    assert lookup(b, fd, u32(1), 8) == (0, b"b" * 8)
    assert lookup(b, fd, u32(2), 8) == (0, bytes(8))
    assert lookup(b, fd, u32(3), 8) == ("ENOENT", bytes(8))
    assert delete(b, fd, u32(0)) == "EINVAL"
    assert delete(b, fd, u32(7)) == "EINVAL"
    assert lookup_and_delete(b, fd, u32(0), 8)[0] == "ENOTSUPP"


@pytest.mark.parametrize(
    ("key", "expected"),
    [(None, (0, u32(0))), (0, (0, u32(1))), (2, ("ENOENT", bytes(4))), (3, (0, u32(0))),
     (1000, (0, u32(0)))],
)  # fmt: skip
def test_array_get_next_key(maps: Maps, key: int | None, expected: tuple[object, bytes]) -> None:
    fd = maps.new(MapType.ARRAY, 4, 8, 3)
    assert next_key(maps.backend, fd, None if key is None else u32(key), 4) == expected


def test_percpu_array_values(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.PERCPU_ARRAY, 4, 4, 3)
    image = b"abcdEFGHijklMNOP"
    assert update(b, fd, u32(0), image) == 0
    assert lookup(b, fd, u32(0), 16) == (0, image)
    assert lookup(b, fd, u32(1), 16) == (0, bytes(16))
    assert update(b, fd, u32(0), image, NOEXIST) == "EEXIST"
    assert update(b, fd, u32(3), image) == "E2BIG"
    assert update(b, fd, u32(0), image, LOCK) == "EINVAL"
    assert update(b, fd, u32(0), image, 8) == "EINVAL"
    assert delete(b, fd, u32(0)) == "EINVAL"


def test_mmapable_array_shares_memory(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.ARRAY, 4, 8, 10, MapFlag.MMAPABLE)
    mapping = b.mmap(fd, 4096, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, 0)
    try:
        view = memoryview(mapping)
        assert update(b, fd, u32(1), b"ABCDEFGH") == 0
        assert bytes(view[8:16]) == b"ABCDEFGH"
        view[16:24] = b"12345678"
        assert lookup(b, fd, u32(2), 8) == (0, b"12345678")
        assert freeze(b, fd) == "EBUSY"  # a writable mapping is open
        view.release()
    finally:
        b.munmap(mapping)
    assert freeze(b, fd) == 0
    with pytest.raises(OSError) as exc:
        b.mmap(fd, 4096, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, 0)
    assert exc.value.errno == 1  # EPERM: frozen
    readonly = b.mmap(fd, 4096, mmap.PROT_READ, mmap.MAP_SHARED, 0)
    assert bytes(memoryview(readonly)[16:24]) == b"12345678"
    b.munmap(readonly)


@pytest.mark.parametrize(
    ("flags", "prot", "map_flags", "offset", "length", "errno_"),
    [
        (MapFlag.MMAPABLE, mmap.PROT_READ, mmap.MAP_PRIVATE, 0, 4096, 22),
        (MapFlag.MMAPABLE, mmap.PROT_READ, mmap.MAP_SHARED, 4096, 4096, 22),
        (MapFlag.MMAPABLE, mmap.PROT_READ, mmap.MAP_SHARED, 0, 8192, 22),
        (0, mmap.PROT_READ, mmap.MAP_SHARED, 0, 4096, 22),
        (MapFlag.MMAPABLE | MapFlag.RDONLY_PROG, mmap.PROT_WRITE, mmap.MAP_SHARED, 0, 4096, 13),
        (MapFlag.MMAPABLE | MapFlag.RDONLY, mmap.PROT_WRITE, mmap.MAP_SHARED, 0, 4096, 13),
    ],
    ids=["private", "past the end", "too long", "not mmapable", "RDONLY_PROG", "RDONLY fd"],
)
def test_mmap_refused(
    maps: Maps, flags: int, prot: int, map_flags: int, offset: int, length: int, errno_: int
) -> None:
    fd = maps.new(MapType.ARRAY, 4, 8, 10, flags)
    with pytest.raises(OSError) as exc:
        maps.backend.mmap(fd, length, prot, map_flags, offset)
    assert exc.value.errno == errno_


def test_mmap_of_a_hash_is_enotsupp(maps: Maps) -> None:
    fd = maps.new(MapType.HASH, 4, 4, 1)
    with pytest.raises(OSError) as exc:
        maps.backend.mmap(fd, 4096, mmap.PROT_READ, mmap.MAP_SHARED, 0)
    assert exc.value.errno == 524


def test_mmap_of_a_larger_array(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.ARRAY, 4, 8, 1000, MapFlag.MMAPABLE)
    assert update(b, fd, u32(600), b"Z" * 8) == 0
    second_page = b.mmap(fd, 4096, mmap.PROT_READ, mmap.MAP_SHARED, 4096)
    assert bytes(memoryview(second_page)[600 * 8 - 4096 : 600 * 8 - 4096 + 8]) == b"Z" * 8
    b.munmap(second_page)
    short = b.mmap(fd, 100, mmap.PROT_READ, mmap.MAP_SHARED, 0)
    assert len(short) == 100
    b.munmap(short)
    with pytest.raises(OSError) as exc:
        b.mmap(fd, 4096, mmap.PROT_READ, mmap.MAP_SHARED, 8192)
    assert exc.value.errno == 22


# -- queue and stack -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("map_type", "peek", "pops"),
    [(MapType.QUEUE, 2, (2, 3)), (MapType.STACK, 3, (3, 2))],
    ids=["queue", "stack"],
)
def test_queue_stack(maps: Maps, map_type: MapType, peek: int, pops: tuple[int, int]) -> None:
    b = maps.backend
    fd = maps.new(map_type, 0, 4, 2)
    assert [update(b, fd, None, u32(v)) for v in (1, 2)] == [0, 0]
    assert update(b, fd, None, u32(3)) == "E2BIG"
    assert update(b, fd, None, u32(3), EXIST) == 0  # overwrites the oldest (1)
    assert update(b, fd, None, u32(4), NOEXIST) == "EINVAL"
    assert update(b, fd, None, u32(4), LOCK) == "EINVAL"
    assert lookup(b, fd, None, 4) == (0, u32(peek))
    assert [lookup_and_delete(b, fd, None, 4) for _ in range(3)] == [
        (0, u32(pops[0])),
        (0, u32(pops[1])),
        ("ENOENT", bytes(4)),
    ]
    assert lookup(b, fd, None, 4) == ("ENOENT", bytes(4))


@pytest.mark.parametrize("map_type", [MapType.QUEUE, MapType.STACK], ids=lambda t: t.name)
def test_queue_stack_refusals(maps: Maps, map_type: MapType) -> None:
    b = maps.backend
    fd = maps.new(map_type, 0, 4, 2)
    assert update(b, fd, u32(0), u32(1)) == "EINVAL"  # a key where none is taken
    assert lookup(b, fd, u32(0), 4)[0] == "EINVAL"
    assert delete(b, fd, None) == "EINVAL"
    assert delete(b, fd, u32(0)) == "EINVAL"
    assert next_key(b, fd, None, 4)[0] == "EINVAL"
    assert lookup_and_delete(b, fd, None, 4, LOCK)[0] == "EINVAL"
    assert lookup_and_delete(b, fd, None, 4, NOEXIST)[0] == "EINVAL"
    assert lookup(b, fd, None, 4, LOCK)[0] == "EINVAL"
    assert freeze(b, fd) == 0
    assert update(b, fd, None, u32(1)) == "EPERM"
    assert lookup_and_delete(b, fd, None, 4)[0] == "EPERM"


# -- bloom filter and ringbuf --------------------------------------------------------------------
def test_bloom_filter(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.BLOOM_FILTER, 0, 4, 100, map_extra=3)
    assert update(b, fd, None, u32(7)) == 0
    assert update(b, fd, None, u32(7), NOEXIST) == "EINVAL"
    assert update(b, fd, None, u32(7), EXIST) == "EINVAL"
    assert elem(b, BpfCmd.MAP_LOOKUP_ELEM, fd, None, buf(u32(7))) == 0
    assert elem(b, BpfCmd.MAP_LOOKUP_ELEM, fd, None, buf(u32(7)), LOCK) == "EINVAL"
    assert elem(b, BpfCmd.MAP_LOOKUP_ELEM, fd, None, None) == "EFAULT"
    assert lookup_and_delete(b, fd, None, 4)[0] == "ENOTSUPP"
    assert delete(b, fd, None) == "EOPNOTSUPP"
    assert next_key(b, fd, None, 4)[0] == "EOPNOTSUPP"
    assert lookup(b, fd, u32(0), 4)[0] == "EINVAL"
    assert update(b, fd, u32(0), u32(1)) == "EINVAL"


ZERO_SEED_PRESENT = {
    "<I": [
        0,
        1,
        2,
        3,
        4,
        10,
        13,
        26,
        57,
        59,
        62,
        84,
        106,
        117,
        124,
        127,
        141,
        168,
        180,
        188,
        189,
        190,
    ],
    "<HI": [0, 1, 2, 3, 4, 31, 110, 168],
    "<QQ": [0, 1, 2, 3, 4, 77, 106, 174, 195],
}
"""Values 0..199 a zero-seed filter holding 0..4 answers as present, measured on Linux 6.18."""


@pytest.mark.parametrize(
    ("value_size", "hashes", "pack"),
    [(4, 1, "<I"), (6, 2, "<HI"), (16, 2, "<QQ")],
    ids=["jhash2 u32", "jhash 6 bytes", "jhash2 16 bytes"],
)
def test_bloom_filter_zero_seed_false_positives(
    maps: Maps, value_size: int, hashes: int, pack: str
) -> None:
    """With BPF_F_ZERO_SEED the bits are the kernel's jhash of the value: the same values come
    back as (falsely) present on every backend."""
    b = maps.backend
    fd = maps.new(MapType.BLOOM_FILTER, 0, value_size, 3, MapFlag.ZERO_SEED, map_extra=hashes)

    def value(v: int) -> bytes:
        return struct.pack(pack, *([v] if pack == "<I" else [1, v] if pack == "<HI" else [v, 7]))

    for v in range(5):
        assert update(b, fd, None, value(v)) == 0
    answers = [elem(b, BpfCmd.MAP_LOOKUP_ELEM, fd, None, buf(value(v))) for v in range(200)]
    present = [v for v, answer in enumerate(answers) if answer == 0]
    assert present == ZERO_SEED_PRESENT[pack]
    assert answers.count("ENOENT") == 200 - len(present)


def test_ringbuf_has_no_elements(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.RINGBUF, 0, 0, 4096)
    assert elem(b, BpfCmd.MAP_LOOKUP_ELEM, fd, None, None) == "ENOTSUPP"
    assert elem(b, BpfCmd.MAP_UPDATE_ELEM, fd, None, None) == "ENOTSUPP"
    assert elem(b, BpfCmd.MAP_DELETE_ELEM, fd, None, None) == "ENOTSUPP"
    assert elem(b, BpfCmd.MAP_GET_NEXT_KEY, fd, None, None) == "ENOTSUPP"
    assert elem(b, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM, fd, None, None) == "ENOTSUPP"
    assert freeze(b, fd) == 0


# -- LPM trie ------------------------------------------------------------------------------------
def test_lpm_trie(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.LPM_TRIE, 8, 4, 3, MapFlag.NO_PREALLOC)
    assert update(b, fd, lpm_key(32, 10, 0, 0, 1), b"A" * 4) == 0
    assert update(b, fd, lpm_key(8, 10, 0, 0, 0), b"B" * 4) == 0
    assert update(b, fd, lpm_key(16, 10, 1, 0, 0), b"C" * 4) == 0
    assert update(b, fd, lpm_key(24, 10, 1, 1, 0), b"D" * 4) == "ENOSPC"
    assert update(b, fd, lpm_key(16, 10, 1, 0, 0), b"E" * 4) == 0  # replacing fits
    assert update(b, fd, lpm_key(33, 10, 0, 0, 1), b"A" * 4) == "EINVAL"
    assert update(b, fd, lpm_key(8, 10, 0, 0, 0), b"A" * 4, 3) == "EINVAL"
    assert update(b, fd, lpm_key(8, 10, 0, 0, 0), b"A" * 4, NOEXIST) == "EEXIST"
    assert update(b, fd, lpm_key(12, 10, 0, 0, 0), b"A" * 4, EXIST) == "ENOENT"
    assert update(b, fd, lpm_key(8, 10, 0, 0, 0), b"A" * 4, LOCK) == "EINVAL"
    assert lookup(b, fd, lpm_key(32, 10, 0, 0, 1), 4) == (0, b"AAAA")
    assert lookup(b, fd, lpm_key(32, 10, 0, 0, 2), 4) == (0, b"BBBB")
    assert lookup(b, fd, lpm_key(32, 10, 1, 5, 5), 4) == (0, b"EEEE")
    assert lookup(b, fd, lpm_key(32, 11, 0, 0, 0), 4) == ("ENOENT", bytes(4))
    assert lookup(b, fd, lpm_key(33, 10, 0, 0, 1), 4) == ("ENOENT", bytes(4))
    assert lookup(b, fd, lpm_key(4, 10, 0, 0, 1), 4) == ("ENOENT", bytes(4))
    postorder = [lpm_key(32, 10, 0, 0, 1), lpm_key(16, 10, 1, 0, 0), lpm_key(8, 10, 0, 0, 0)]
    assert all_keys(b, fd, 8) == postorder
    for absent in (lpm_key(32, 9, 9, 9, 9), lpm_key(40, 9, 9, 9, 9), lpm_key(8, 11, 0, 0, 0)):
        assert next_key(b, fd, absent, 8) == (0, postorder[0])
    assert delete(b, fd, lpm_key(12, 10, 0, 0, 0)) == "ENOENT"
    assert delete(b, fd, lpm_key(33, 10, 0, 0, 0)) == "EINVAL"
    assert delete(b, fd, lpm_key(8, 10, 0, 0, 0)) == 0
    assert delete(b, fd, lpm_key(8, 10, 0, 0, 0)) == "ENOENT"
    assert lookup_and_delete(b, fd, lpm_key(16, 10, 1, 0, 0), 4)[0] == "ENOTSUPP"


def covers(shorter: bytes, longer: bytes) -> bool:
    """Whether LPM key `shorter` is a proper prefix of `longer` (4-byte data)."""
    plen, llen = int.from_bytes(shorter[:4], "little"), int.from_bytes(longer[:4], "little")
    shift = 32 - plen
    same = int.from_bytes(shorter[4:], "big") >> shift == int.from_bytes(longer[4:], "big") >> shift
    return plen < llen and same


def test_lpm_trie_random_operations(maps: Maps) -> None:
    """400 seeded random updates, deletes and lookups: every answer, the postorder walk and the
    longest-prefix lookups are the kernel's (their digest was recorded on Linux 6.18)."""
    b = maps.backend
    fd = maps.new(MapType.LPM_TRIE, 8, 4, 200, MapFlag.NO_PREALLOC)
    rnd = random.Random(5)
    answers: list[object] = []
    for step in range(400):
        prefix = rnd.choice([0, 8, 12, 16, 20, 24, 28, 30, 31, 32])
        data = [rnd.choice([0, 10, 192, 255])] + [rnd.choice([0, 1, 128, 255]) for _ in range(3)]
        key = lpm_key(prefix, *data)
        roll = rnd.random()
        if roll < 0.6:
            answers.append(update(b, fd, key, u32(step)))
        elif roll < 0.9:
            answers.append(delete(b, fd, key))
        else:
            answers.append(lookup(b, fd, key, 4))
    walk = all_keys(b, fd, 8)
    for i, key in enumerate(walk):  # postorder: no key comes before a key it covers
        assert not any(covers(key, later) for later in walk[i + 1 :])
    matches = [lookup(b, fd, lpm_key(32, a, c, 0, 1), 4) for a in (0, 10, 192, 255)
               for c in (0, 1, 128, 255)]  # fmt: skip
    assert fdinfo(b, fd)["memlock"] == str((24 + 4 + 4) * len(walk))
    record = repr((answers, walk, matches)).encode()
    assert hashlib.sha256(record).hexdigest() == LPM_RANDOM_DIGEST


# -- maps of maps --------------------------------------------------------------------------------
def test_array_of_maps(maps: Maps) -> None:
    b = maps.backend
    template = maps.new(MapType.ARRAY, 4, 8, 4)
    fd = maps.new(MapType.ARRAY_OF_MAPS, 4, 4, 3, inner_map_fd=template)
    inner = maps.new(MapType.ARRAY, 4, 8, 4)
    assert update(b, fd, u32(0), u32(inner)) == 0
    assert lookup(b, fd, u32(0), 4) == (0, u32(map_id(b, inner)))
    assert lookup(b, fd, u32(1), 4) == ("ENOENT", bytes(4))
    refused = {
        "other max_entries": update(b, fd, u32(1), u32(maps.new(MapType.ARRAY, 4, 8, 5))),
        "other type": update(b, fd, u32(1), u32(maps.new(MapType.HASH, 4, 8, 4))),
        "other flags": update(b, fd, u32(1), u32(maps.new(MapType.ARRAY, 4, 8, 4, 1 << 12))),
        "not open": update(b, fd, u32(1), u32(9999)),
        "stdin": update(b, fd, u32(1), u32(0)),
        "a program": update(b, fd, u32(1), u32(load_prog(maps))),
        "BPF_NOEXIST": update(b, fd, u32(1), u32(template), NOEXIST),
        "out of range": update(b, fd, u32(3), u32(template)),
    }
    assert refused == {
        "other max_entries": "EINVAL",
        "other type": "EINVAL",
        "other flags": "EINVAL",
        "not open": "EBADF",
        "stdin": "EINVAL",
        "a program": "EINVAL",
        "BPF_NOEXIST": "EINVAL",
        "out of range": "E2BIG",
    }
    assert delete(b, fd, u32(1)) == "ENOENT"
    assert delete(b, fd, u32(0)) == 0
    assert delete(b, fd, u32(5)) == "E2BIG"
    assert next_key(b, fd, None, 4) == (0, u32(0))


def test_inner_map_flag_lifts_the_max_entries_check(maps: Maps) -> None:
    b = maps.backend
    template = maps.new(MapType.ARRAY, 4, 8, 4, MapFlag.INNER_MAP)
    fd = maps.new(MapType.ARRAY_OF_MAPS, 4, 4, 3, inner_map_fd=template)
    assert update(b, fd, u32(0), u32(maps.new(MapType.ARRAY, 4, 8, 50, MapFlag.INNER_MAP))) == 0
    assert update(b, fd, u32(0), u32(maps.new(MapType.ARRAY, 4, 8, 4))) == "EINVAL"


@pytest.mark.parametrize("outer", [MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS], ids=str)
@pytest.mark.parametrize(
    ("inner", "expected"),
    [
        ((MapType.PROG_ARRAY, 4, 4, 1, 0), "ENOTSUPP"),
        ((MapType.ARRAY_OF_MAPS, 4, 4, 1, 0), "EINVAL"),
        ((MapType.PERF_EVENT_ARRAY, 4, 4, 1, 0), 0),
        ((MapType.QUEUE, 0, 4, 1, 0), 0),
        ((MapType.LPM_TRIE, 8, 4, 1, MapFlag.NO_PREALLOC), 0),
        ((MapType.BLOOM_FILTER, 0, 4, 1, 0), 0),
        ((MapType.RINGBUF, 0, 0, 4096, 0), 0),
        ((MapType.LRU_HASH, 4, 4, 1, 0), 0),
        ((MapType.PERCPU_ARRAY, 4, 4, 1, 0), 0),
    ],
    ids=lambda v: v[0].name if isinstance(v, tuple) else str(v),
)
def test_inner_map_templates(
    maps: Maps, outer: MapType, inner: tuple[int, int, int, int, int], expected: int | str
) -> None:
    if inner[0] == MapType.ARRAY_OF_MAPS:
        template = maps.new(*inner, inner_map_fd=maps.new(MapType.ARRAY, 4, 4, 1))
    else:
        template = maps.new(*inner)
    result = maps.create(outer, 4, 4, 2, inner_map_fd=template)
    assert result == expected if isinstance(expected, str) else isinstance(result, int)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"inner_map_fd": 0}, "EINVAL"),
        ({"inner_map_fd": 9999}, "EBADF"),
        ({"value_size": 8}, "EINVAL"),
    ],
    ids=["inner stdin", "inner not open", "value 8"],
)
def test_map_of_maps_create_refused(maps: Maps, fields: dict[str, int], expected: str) -> None:
    template = maps.new(MapType.ARRAY, 4, 4, 1)
    shape = {"key_size": 4, "value_size": 4, "max_entries": 2, "inner_map_fd": template, **fields}
    result = maps.create(
        MapType.ARRAY_OF_MAPS,
        shape.pop("key_size"),
        shape.pop("value_size"),
        shape.pop("max_entries"),
        **shape,
    )
    assert result == expected


def test_inner_template_ignores_max_entries_but_for_arrays(maps: Maps) -> None:
    b = maps.backend
    for inner in (
        (MapType.HASH, 4, 4, 4),
        (MapType.PERCPU_ARRAY, 4, 4, 4),
        (MapType.QUEUE, 0, 4, 4),
    ):
        fd = maps.new(MapType.ARRAY_OF_MAPS, 4, 4, 2, inner_map_fd=maps.new(*inner))
        assert update(b, fd, u32(0), u32(maps.new(inner[0], inner[1], inner[2], 8))) == 0
    fd = maps.new(MapType.ARRAY_OF_MAPS, 4, 4, 2, inner_map_fd=maps.new(MapType.HASH, 4, 4, 4))
    other_flags = maps.new(MapType.HASH, 4, 4, 4, MapFlag.NO_PREALLOC)
    assert update(b, fd, u32(0), u32(other_flags)) == "EINVAL"


def test_hash_of_maps(maps: Maps) -> None:
    b = maps.backend
    template = maps.new(MapType.ARRAY, 4, 8, 4)
    fd = maps.new(MapType.HASH_OF_MAPS, 8, 4, 2, inner_map_fd=template)
    first, second = maps.new(MapType.ARRAY, 4, 8, 4), maps.new(MapType.ARRAY, 4, 8, 4)
    assert update(b, fd, u64(1), u32(first)) == 0
    assert update(b, fd, u64(2), u32(second)) == 0
    assert update(b, fd, u64(3), u32(first)) == "E2BIG"
    assert update(b, fd, u64(3), u32(9999)) == "EBADF"  # the fd is resolved first
    assert update(b, fd, u64(3), u32(maps.new(MapType.ARRAY, 4, 8, 5))) == "EINVAL"
    assert update(b, fd, u64(1), u32(first), LOCK) == "EINVAL"
    assert update(b, fd, u64(1), u32(first), 3) == "EINVAL"
    assert update(b, fd, u64(1), u32(second), NOEXIST) == "EEXIST"
    assert update(b, fd, u64(4), u32(second), EXIST) == "ENOENT"
    assert lookup(b, fd, u64(1), 4) == (0, u32(map_id(b, first)))
    assert lookup_and_delete(b, fd, u64(1), 4)[0] == "ENOTSUPP"
    out = batch(b, BpfCmd.MAP_LOOKUP_BATCH, fd, 4, key_room=32, value_room=16)
    assert (out.result, out.count) == ("ENOENT", 2)
    ids = sorted(struct.unpack("<II", out.values[:8]))
    assert ids == sorted([map_id(b, first), map_id(b, second)])
    assert delete(b, fd, u64(2)) == 0
    assert delete(b, fd, u64(2)) == "ENOENT"


def test_maps_of_maps_memlock(maps: Maps) -> None:
    b = maps.backend
    template = maps.new(MapType.ARRAY, 4, 8, 4)
    hom = maps.new(MapType.HASH_OF_MAPS, 8, 4, 2, inner_map_fd=template)
    aom = maps.new(MapType.ARRAY_OF_MAPS, 4, 4, 3, inner_map_fd=template)
    hom_np = maps.new(MapType.HASH_OF_MAPS, 8, 4, 100, MapFlag.NO_PREALLOC, inner_map_fd=template)
    assert [fdinfo(b, fd)["memlock"] for fd in (hom, aom, hom_np)] == ["1072", "336", "2944"]


# -- program arrays ------------------------------------------------------------------------------
def test_prog_array(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.PROG_ARRAY, 4, 4, 4)
    prog = load_prog(maps)
    assert "owner_prog_type" not in fdinfo(b, fd)
    assert update(b, fd, u32(0), u32(prog)) == 0
    prog_id = int(fdinfo(b, prog)["prog_id"])
    assert lookup(b, fd, u32(0), 4) == (0, u32(prog_id))
    assert lookup(b, fd, u32(1), 4) == ("ENOENT", bytes(4))
    assert lookup(b, fd, u32(9), 4) == ("ENOENT", bytes(4))
    refused = {
        "BPF_NOEXIST": update(b, fd, u32(1), u32(prog), NOEXIST),
        "BPF_EXIST": update(b, fd, u32(1), u32(prog), EXIST),
        "out of range": update(b, fd, u32(4), u32(prog)),
        "not open": update(b, fd, u32(1), u32(9999)),
        "a map": update(b, fd, u32(1), u32(fd)),
        "stdin": update(b, fd, u32(1), u32(0)),
        "another program type": update(b, fd, u32(1), u32(load_prog(maps, ProgType.XDP))),
    }
    assert refused == {
        "BPF_NOEXIST": "EINVAL",
        "BPF_EXIST": "EINVAL",
        "out of range": "E2BIG",
        "not open": "EBADF",
        "a map": "EINVAL",
        "stdin": "EINVAL",
        "another program type": "EINVAL",
    }
    info = fdinfo(b, fd)
    assert info["owner_prog_type"] == str(int(ProgType.SOCKET_FILTER))
    assert info["owner_jited"] == fdinfo(b, prog)["prog_jited"]
    assert next_key(b, fd, u32(1), 4) == (0, u32(2))
    out = batch(b, BpfCmd.MAP_LOOKUP_BATCH, fd, 4, key_room=16, value_room=16)
    assert (out.result, out.count) == ("ENOTSUPP", 4)
    assert delete(b, fd, u32(1)) == "ENOENT"
    assert delete(b, fd, u32(0)) == 0
    assert delete(b, fd, u32(0)) == "ENOENT"
    assert delete(b, fd, u32(7)) == "E2BIG"
    assert freeze(b, fd) == 0
    assert update(b, fd, u32(0), u32(prog)) == "EPERM"


# -- perf event arrays ---------------------------------------------------------------------------
def test_perf_event_array(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.PERF_EVENT_ARRAY, 4, 4, 4)
    event = perf_event(maps)
    assert update(b, fd, u32(0), u32(event)) == 0
    refused = {
        "inherited event": update(b, fd, u32(1), u32(perf_event(maps, inherit=True))),
        "a program": update(b, fd, u32(1), u32(load_prog(maps))),
        "not open": update(b, fd, u32(1), u32(9999)),
        "BPF_NOEXIST": update(b, fd, u32(1), u32(event), NOEXIST),
        "out of range": update(b, fd, u32(4), u32(event)),
    }
    assert refused == {
        "inherited event": "EOPNOTSUPP",
        "a program": "EBADF",
        "not open": "EBADF",
        "BPF_NOEXIST": "EINVAL",
        "out of range": "E2BIG",
    }
    assert lookup(b, fd, u32(0), 4) == ("ENOTSUPP", bytes(4))
    assert delete(b, fd, u32(0)) == 0
    assert delete(b, fd, u32(0)) == "ENOENT"
    assert lookup_and_delete(b, fd, u32(0), 4)[0] == "ENOTSUPP"


@pytest.mark.parametrize(("flags", "kept"), [(0, "ENOENT"), (MapFlag.PRESERVE_ELEMS, 0)])
def test_perf_event_array_forgets_events_with_their_fd(
    maps: Maps, flags: int, kept: int | str
) -> None:
    """Closing the map fd an event was stored through removes it, unless PRESERVE_ELEMS."""
    b = maps.backend
    fd = maps.new(MapType.PERF_EVENT_ARRAY, 4, 4, 4, flags)
    second = call(b, BpfCmd.MAP_GET_FD_BY_ID, GetIdAttr(start_id=map_id(b, fd)))
    assert isinstance(second, int), second
    event = perf_event(maps)
    assert update(b, second, u32(2), u32(event)) == 0
    assert update(b, fd, u32(3), u32(event)) == 0
    b.close(second)
    assert delete(b, fd, u32(2)) == kept
    assert delete(b, fd, u32(3)) == 0  # stored through the fd still open
