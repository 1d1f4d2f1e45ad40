"""The map batch commands on every backend (raw bpf() level): LOOKUP_BATCH,
LOOKUP_AND_DELETE_BATCH, UPDATE_BATCH and DELETE_BATCH, with the count and the out_batch token
written back, ENOENT at the end of a walk, ENOTSUPP for map types without the command. Hash
bucket order is the kernel's secret: the assertions compare sets, not orders."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from maps_support import Maps, addr, batch, call, lookup, lpm_key, room, update

from bpfsys.abi import BpfCmd, MapBatchAttr, MapFlag, MapType
from bpfsys.backend import Backend

LOOKUP, LOOKUP_AND_DELETE = BpfCmd.MAP_LOOKUP_BATCH, BpfCmd.MAP_LOOKUP_AND_DELETE_BATCH
UPDATE, DELETE = BpfCmd.MAP_UPDATE_BATCH, BpfCmd.MAP_DELETE_BATCH
UNTOUCHED = b"\xee" * 4


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def chunks(data: bytes, size: int, count: int) -> list[bytes]:
    return [data[i * size : (i + 1) * size] for i in range(count)]


@pytest.fixture
def maps(backend: Backend) -> Iterator[Maps]:
    made = Maps(backend)
    yield made
    made.close_all()


def filled_hash(maps: Maps, count: int = 3, max_entries: int = 4) -> int:
    fd = maps.new(MapType.HASH, 8, 8, max_entries)
    for key in range(count):
        assert update(maps.backend, fd, u64(key), u64(100 + key)) == 0
    return fd


# -- hash maps ---------------------------------------------------------------------------------
def test_hash_lookup_batch_all(maps: Maps) -> None:
    fd = filled_hash(maps)
    out = batch(maps.backend, LOOKUP, fd, 10, key_room=80, value_room=80)
    assert (out.result, out.count, out.out_batch) == ("ENOENT", 3, u32(4))  # n_buckets at the end
    pairs = set(zip(chunks(out.keys, 8, 3), chunks(out.values, 8, 3), strict=True))
    assert pairs == {(u64(k), u64(100 + k)) for k in range(3)}


@pytest.mark.parametrize(
    ("count", "in_batch", "flags", "elem_flags", "expected"),
    [
        (0, None, 0, 0, (0, 0, UNTOUCHED)),
        (10, u32(4), 0, 0, ("ENOENT", 0, UNTOUCHED)),
        (10, u32(1 << 31), 0, 0, ("ENOENT", 0, UNTOUCHED)),
        (10, None, 1, 0, ("EINVAL", 10, UNTOUCHED)),
        (10, None, 0, 4, ("EINVAL", 10, UNTOUCHED)),
        (10, None, 0, 2, ("EINVAL", 10, UNTOUCHED)),
    ],
    ids=["count 0", "in_batch n_buckets", "in_batch huge", "flags", "BPF_F_LOCK", "elem_flags 2"],
)
def test_hash_lookup_batch_refusals(
    maps: Maps,
    count: int,
    in_batch: bytes | None,
    flags: int,
    elem_flags: int,
    expected: tuple[object, int, bytes],
) -> None:
    fd = filled_hash(maps)
    for cmd in (LOOKUP, LOOKUP_AND_DELETE):
        out = batch(
            maps.backend,
            cmd,
            fd,
            count,
            key_room=80,
            value_room=80,
            in_batch=in_batch,
            flags=flags,
            elem_flags=elem_flags,
        )
        assert (out.result, out.count, out.out_batch) == expected


def test_hash_lookup_batch_in_chunks(maps: Maps) -> None:
    """A walk in chunks of 3 over 10 keys in 1024 buckets: every key once, ENOENT at the end."""
    b = maps.backend
    fd = filled_hash(maps, count=10, max_entries=1024)
    seen: list[bytes] = []
    token: bytes | None = None
    for _ in range(10):
        out = batch(b, LOOKUP, fd, 3, key_room=24, value_room=24, in_batch=token)
        assert out.count <= 3
        seen += chunks(out.keys, 8, out.count)
        if out.result == "ENOENT":
            assert out.out_batch == u32(1024)
            break
        assert out.result == 0
        assert out.count == 3
        token = out.out_batch
    assert sorted(seen) == [u64(k) for k in range(10)]


def test_hash_lookup_and_delete_batch(maps: Maps) -> None:
    b = maps.backend
    fd = filled_hash(maps)
    out = batch(b, LOOKUP_AND_DELETE, fd, 10, key_room=80, value_room=80)
    assert (out.result, out.count, out.out_batch) == ("ENOENT", 3, u32(4))
    assert sorted(chunks(out.keys, 8, 3)) == [u64(k) for k in range(3)]
    assert [lookup(b, fd, u64(k), 8)[0] for k in range(3)] == ["ENOENT"] * 3
    empty = batch(b, LOOKUP_AND_DELETE, fd, 10, key_room=80, value_room=80)
    assert (empty.result, empty.count, empty.out_batch) == ("ENOENT", 0, u32(4))


@pytest.mark.parametrize("null", ["out_batch", "keys"])
def test_hash_lookup_batch_bad_pointers(maps: Maps, null: str) -> None:
    fd = filled_hash(maps)
    keys, values, token = room(80), room(80), room(4)
    attr = MapBatchAttr(
        map_fd=fd,
        count=10,
        keys=0 if null == "keys" else addr(keys),
        values=addr(values),
        out_batch=0 if null == "out_batch" else addr(token),
    )
    assert call(maps.backend, LOOKUP, attr) == "EFAULT"
    assert attr.count == 0  # zeroed before the walk, not set after it


def test_hash_update_batch(maps: Maps) -> None:
    b = maps.backend
    fd = filled_hash(maps)
    keys = u64(5) + u64(6) + u64(7)
    out = batch(b, UPDATE, fd, 3, keys=keys, values=u64(1) * 3)
    assert (out.result, out.count) == ("E2BIG", 1)  # the 4th entry fits, the 5th does not
    assert lookup(b, fd, u64(5), 8) == (0, u64(1))
    assert batch(b, UPDATE, fd, 1, keys=u64(0), values=u64(9), flags=1).result == 0  # ignored
    refused = batch(b, UPDATE, fd, 1, keys=u64(0), values=u64(9), elem_flags=1)
    assert (refused.result, refused.count) == ("EINVAL", 1)
    assert batch(b, UPDATE, fd, 0, keys=u64(0), values=u64(9)).count == 0


def test_hash_delete_batch(maps: Maps) -> None:
    b = maps.backend
    fd = filled_hash(maps)
    out = batch(b, DELETE, fd, 3, keys=u64(0) + u64(9) + u64(1))
    assert (out.result, out.count) == ("ENOENT", 1)
    assert lookup(b, fd, u64(1), 8) == (0, u64(101))  # not reached
    assert batch(b, DELETE, fd, 1, keys=u64(1), flags=5).result == 0  # flags ignored
    assert batch(b, DELETE, fd, 1, keys=u64(2), elem_flags=2).result == "EINVAL"


def test_percpu_hash_lookup_batch(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.PERCPU_HASH, 8, 4, 4)
    assert update(b, fd, u64(1), b"abcdEFGHijklMNOP") == 0
    out = batch(b, LOOKUP, fd, 10, key_room=80, value_room=160)
    assert (out.result, out.count) == ("ENOENT", 1)
    assert out.values[:16] == b"abcdEFGHijklMNOP"


# -- generic walks: arrays, LPM tries, arrays of maps -----------------------------------------
def filled_array(maps: Maps) -> int:
    fd = maps.new(MapType.ARRAY, 4, 8, 3)
    assert update(maps.backend, fd, u32(0), b"a" * 8) == 0
    assert update(maps.backend, fd, u32(1), b"b" * 8) == 0
    return fd


@pytest.mark.parametrize(
    ("count", "in_batch", "expected"),
    [
        (2, None, (0, 2, u32(0) + u32(1), b"a" * 8 + b"b" * 8, u32(1))),
        (2, u32(1), ("ENOENT", 1, u32(2) + bytes(4), bytes(16), u32(2))),
        (5, u32(2), ("ENOENT", 0, bytes(8), bytes(16), UNTOUCHED)),
        (0, None, (0, 0, bytes(8), bytes(16), UNTOUCHED)),
    ],
    ids=["first two", "continue", "past the last", "count 0"],
)
def test_array_lookup_batch(
    maps: Maps, count: int, in_batch: bytes | None, expected: tuple[object, ...]
) -> None:
    fd = filled_array(maps)
    out = batch(maps.backend, LOOKUP, fd, count, key_room=8, value_room=16, in_batch=in_batch)
    assert (out.result, out.count, out.keys, out.values, out.out_batch) == expected


def test_array_lookup_batch_from_an_index_out_of_range_restarts(maps: Maps) -> None:
    fd = filled_array(maps)
    out = batch(maps.backend, LOOKUP, fd, 5, key_room=40, value_room=80, in_batch=u32(99))
    assert (out.result, out.count, out.out_batch) == ("ENOENT", 3, u32(2))
    assert chunks(out.keys, 4, 3) == [u32(0), u32(1), u32(2)]


def test_array_batch_writes(maps: Maps) -> None:
    b = maps.backend
    fd = filled_array(maps)
    out = batch(b, UPDATE, fd, 3, keys=u32(0) + u32(1) + u32(7), values=b"x" * 24)
    assert (out.result, out.count) == ("E2BIG", 2)
    assert lookup(b, fd, u32(1), 8) == (0, b"x" * 8)
    assert batch(b, UPDATE, fd, 1, keys=u32(0), values=b"y" * 8, flags=1).result == 0
    for elem_flags in (1, 2, 4, 8):
        refused = batch(b, UPDATE, fd, 1, keys=u32(0), values=b"z" * 8, elem_flags=elem_flags)
        assert (refused.result, refused.count) == ("EINVAL", 1)
    for cmd in (DELETE, LOOKUP_AND_DELETE):
        out = batch(b, cmd, fd, 2, keys=u32(0) * 2, key_room=8, value_room=16)
        assert (out.result, out.count) == ("ENOTSUPP", 2)


def test_percpu_array_lookup_batch(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.PERCPU_ARRAY, 4, 4, 3)
    assert update(b, fd, u32(1), b"abcdEFGHijklMNOP") == 0
    out = batch(b, LOOKUP, fd, 5, key_room=20, value_room=80)
    assert (out.result, out.count, out.out_batch) == ("ENOENT", 3, u32(2))
    assert out.values[16:32] == b"abcdEFGHijklMNOP"


def test_lpm_trie_batches(maps: Maps) -> None:
    b = maps.backend
    fd = maps.new(MapType.LPM_TRIE, 8, 4, 10, MapFlag.NO_PREALLOC)
    keys = [lpm_key(8, 10, 0, 0, 0), lpm_key(16, 10, 1, 0, 0), lpm_key(32, 10, 0, 0, 1)]
    out = batch(b, UPDATE, fd, 3, keys=b"".join(keys), values=b"AAAABBBBCCCC")
    assert (out.result, out.count) == (0, 3)
    walk = batch(b, LOOKUP, fd, 10, key_room=80, value_room=40, out_size=8)
    assert (walk.result, walk.count) == ("ENOENT", 3)
    assert chunks(walk.keys, 8, 3) == [keys[2], keys[1], keys[0]]  # postorder
    assert walk.values[:12] == b"CCCCBBBBAAAA"
    assert walk.out_batch == keys[0]
    gone = batch(b, DELETE, fd, 2, keys=keys[0] + lpm_key(24, 1, 2, 3, 0))
    assert (gone.result, gone.count) == ("ENOENT", 1)
    unsupported = batch(b, LOOKUP_AND_DELETE, fd, 10, key_room=80, value_room=40)
    assert (unsupported.result, unsupported.count) == ("ENOTSUPP", 10)


def test_array_of_maps_batches(maps: Maps) -> None:
    b = maps.backend
    template = maps.new(MapType.ARRAY, 4, 8, 4)
    fd = maps.new(MapType.ARRAY_OF_MAPS, 4, 4, 3, inner_map_fd=template)
    out = batch(b, UPDATE, fd, 1, keys=u32(1), values=u32(template))
    assert (out.result, out.count) == (0, 1)
    walk = batch(b, LOOKUP, fd, 4, key_room=16, value_room=16)
    assert (walk.result, walk.count, walk.out_batch) == ("ENOENT", 1, u32(2))  # empty slots skipped
    assert walk.keys[:4] == u32(1)
    for cmd in (DELETE, LOOKUP_AND_DELETE):
        assert batch(b, cmd, fd, 1, keys=u32(1), key_room=16, value_room=16).result == "ENOTSUPP"


# -- map types without batches, and access modes ---------------------------------------------
@pytest.mark.parametrize("cmd", [LOOKUP, LOOKUP_AND_DELETE, UPDATE, DELETE], ids=lambda c: c.name)
@pytest.mark.parametrize(
    "shape",
    [
        (MapType.QUEUE, 0, 4, 4, 0),
        (MapType.STACK, 0, 4, 4, 0),
        (MapType.BLOOM_FILTER, 0, 4, 4, 0),
        (MapType.RINGBUF, 0, 0, 4096, 0),
        (MapType.PROG_ARRAY, 4, 4, 4, 0),
        (MapType.PERF_EVENT_ARRAY, 4, 4, 4, 0),
    ],
    ids=lambda s: s[0].name,
)
def test_no_batch_commands(maps: Maps, shape: tuple[int, ...], cmd: BpfCmd) -> None:
    fd = maps.new(*shape)
    out = batch(maps.backend, cmd, fd, 4, keys=bytes(16), values=bytes(16), key_room=16)
    assert (out.result, out.count) == ("ENOTSUPP", 4)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (MapFlag.RDONLY, {LOOKUP: "ENOENT", LOOKUP_AND_DELETE: "EPERM", UPDATE: "EPERM"}),
        (MapFlag.WRONLY, {LOOKUP: "EPERM", LOOKUP_AND_DELETE: "EPERM", UPDATE: 0}),
    ],
    ids=["RDONLY", "WRONLY"],
)
def test_batch_access_modes(maps: Maps, flags: int, expected: dict[BpfCmd, object]) -> None:
    fd = maps.new(MapType.HASH, 8, 8, 4, flags)
    got = {
        cmd: batch(
            maps.backend, cmd, fd, 1, keys=u64(1), values=u64(1), key_room=8, value_room=8
        ).result
        for cmd in expected
    }
    assert got == expected
