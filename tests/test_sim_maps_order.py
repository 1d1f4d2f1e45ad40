"""Hash map iteration order on every backend (raw bpf() level): GET_NEXT_KEY walks,
LOOKUP_BATCH / LOOKUP_AND_DELETE_BATCH output and the batch's bucket token and ENOSPC, for maps
created with BPF_F_ZERO_SEED (hashrnd 0), where the live kernel's order is a fact to compare.

The expected orders come from `HtabModel`, a few lines of the kernel's rules (kernel/bpf/
hashtab.c, 6.18): bucket = jhash2/jhash(key, 0) & (n_buckets - 1), each bucket newest link first,
buckets in index order; an update that swaps elements (HASH, LRU_HASH) relinks the key at its
bucket's head. On the live kernel the assertions check the model, on the simulator
the implementation; a few orders measured on the live kernel are spelled out as literals.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable, Iterator

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from maps_support import Maps, all_keys, batch, delete, next_key, update

from bpfsys.abi import BpfCmd, MapFlag, MapType
from bpfsys.backend import Backend
from kernelsim import SimBackend
from kernelsim.maps.base import BpfMap
from kernelsim.maps.buckets import BucketLists
from kernelsim.maps.hash import HashTableMap
from kernelsim.maps.jhash import jhash, jhash2

LOOKUP, LOOKUP_AND_DELETE = BpfCmd.MAP_LOOKUP_BATCH, BpfCmd.MAP_LOOKUP_AND_DELETE_BATCH
ANY, NOEXIST, EXIST = 0, 1, 2
ZERO_SEED = int(MapFlag.ZERO_SEED)
NO_PREALLOC = int(MapFlag.NO_PREALLOC)
PERCPU = (MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH)
SWAPPING = (MapType.HASH, MapType.LRU_HASH)
KIND_IDS = ["hash", "hash-no-prealloc", "percpu", "percpu-no-prealloc", "lru", "lru-percpu"]
KINDS = [
    (MapType.HASH, 0),
    (MapType.HASH, NO_PREALLOC),
    (MapType.PERCPU_HASH, 0),
    (MapType.PERCPU_HASH, NO_PREALLOC),
    (MapType.LRU_HASH, 0),
    (MapType.LRU_PERCPU_HASH, 0),
]


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def htab_hash(key: bytes, seed: int = 0) -> int:
    return jhash2(key, seed) if len(key) % 4 == 0 else jhash(key, seed)


def roundup_pow_of_two(value: int) -> int:
    return 1 << (value - 1).bit_length()


def make_key(number: int, key_size: int) -> bytes:
    """Key `number` of `key_size` bytes (the number's bytes repeated)."""
    raw = struct.pack("<I", number)
    return (raw * (key_size // 4 + 1))[:key_size]


def keys_in_bucket(bucket: int, n_buckets: int, key_size: int, count: int) -> list[bytes]:
    """The first `count` keys (by number) whose zero-seed hash falls in `bucket`."""
    found: list[bytes] = []
    number = 0
    while len(found) < count:
        key = make_key(number, key_size)
        if htab_hash(key) & (n_buckets - 1) == bucket:
            found.append(key)
        number += 1
    return found


def cpus(backend: Backend) -> int:
    text = backend.read_file("/sys/devices/system/cpu/possible").decode().strip()
    return int(text.rpartition("-")[2]) + 1


@attrs.define
class HtabModel:
    """The kernel's bucket lists, as the test expects them."""

    n_buckets: int
    seed: int = 0
    linked: list[bytes] = attrs.Factory(list)
    """The keys, oldest link first."""

    def bucket(self, key: bytes) -> int:
        return htab_hash(key, self.seed) & (self.n_buckets - 1)

    def link(self, key: bytes) -> None:
        """An insert, or an update that swaps in a new element: the key to its bucket's head."""
        if key in self.linked:
            self.linked.remove(key)
        self.linked.append(key)

    def unlink(self, key: bytes) -> None:
        self.linked.remove(key)

    def buckets(self) -> dict[int, list[bytes]]:
        """Non-empty bucket -> its keys, head first, in bucket order."""
        lists: dict[int, list[bytes]] = {}
        for key in reversed(self.linked):
            lists.setdefault(self.bucket(key), []).append(key)
        return dict(sorted(lists.items()))

    def walk(self) -> list[bytes]:
        return [key for keys in self.buckets().values() for key in keys]

    def batch(self, start: int, count: int) -> tuple[int | str, list[bytes], int]:
        """(result, keys, out_batch) of a LOOKUP_BATCH from bucket `start` with `count`."""
        keys: list[bytes] = []
        for bucket, members in self.buckets().items():
            if bucket < start:
                continue
            if len(members) > count - len(keys):
                return ("ENOSPC" if not keys else 0), keys, bucket
            keys += members
        return "ENOENT", keys, self.n_buckets


@attrs.define
class OrderedMap:
    """One map on a backend and the model of its order, updated together."""

    maps: Maps
    fd: int
    map_type: MapType
    key_size: int
    value_size: int
    model: HtabModel

    @property
    def backend(self) -> Backend:
        return self.maps.backend

    def value(self, key: bytes) -> bytes:
        return (key * 8)[:8] * (self.value_size // 8)

    def insert(self, key: bytes, flags: int = ANY) -> None:
        present = key in self.model.linked
        result = update(self.backend, self.fd, key, self.value(key), flags)
        assert result == 0, (key, result)
        if not present or self.map_type in SWAPPING:
            self.model.link(key)

    def delete(self, key: bytes) -> None:
        assert delete(self.backend, self.fd, key) == 0
        self.model.unlink(key)

    def walk(self) -> list[bytes]:
        return all_keys(self.backend, self.fd, self.key_size)


@pytest.fixture(autouse=True)
def one_cpu() -> Iterator[None]:
    """Keep the test on one CPU: the live LRU takes free elements into per-CPU lists, and one
    that finds its CPU's list and the global one empty evicts before the map is full."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    yield
    os.sched_setaffinity(0, allowed)


@pytest.fixture
def maps(backend: Backend) -> Iterator[Maps]:
    made = Maps(backend)
    yield made
    made.close_all()


def new_map(
    maps: Maps, map_type: MapType, key_size: int, max_entries: int, flags: int = ZERO_SEED
) -> OrderedMap:
    """A map and its model (hashrnd 0: `flags` should have BPF_F_ZERO_SEED, else the test sets
    the model's seed)."""
    value_size = 8 * cpus(maps.backend) if map_type in PERCPU else 8
    fd = maps.new(map_type, key_size, 8, max_entries, flags)
    model = HtabModel(roundup_pow_of_two(max_entries))
    return OrderedMap(maps, fd, map_type, key_size, value_size, model)


# -- measured on the live kernel -------------------------------------------------------------------
def test_recorded_walk(maps: Maps) -> None:
    """scenarios/map_lifecycle.jsonl: keys 1..5 of a 4/8/8 HASH walk as 4, 2, 1, 5, 3."""
    table = new_map(maps, MapType.HASH, 4, 8)
    for number in range(1, 6):
        table.insert(u32(number))
    assert table.walk() == [u32(n) for n in (4, 2, 1, 5, 3)]
    out = batch(maps.backend, LOOKUP, table.fd, 16, key_room=64, value_room=128)
    assert (out.result, out.count, out.out_batch) == ("ENOENT", 5, u32(8))
    assert out.keys[:20] == b"".join(u32(n) for n in (4, 2, 1, 5, 3))


SAME_BUCKET = [u32(0), u32(26), u32(35)]
"""Three keys in bucket 0 of 8 (zero seed)."""


@pytest.mark.parametrize(
    ("kind", "walks"),
    [
        (KINDS[0], ([35, 26, 0], [0, 35, 26], [26, 0, 35], [0, 35], [0, 35])),
        (KINDS[1], ([35, 26, 0], [0, 35, 26], [26, 0, 35], [0, 35], [0, 35])),
        (KINDS[2], ([35, 26, 0], [35, 26, 0], [35, 26, 0], [35, 0], [35, 0])),
        (KINDS[3], ([35, 26, 0], [35, 26, 0], [35, 26, 0], [35, 0], [35, 0])),
        (KINDS[4], ([35, 26, 0], [0, 35, 26], [26, 0, 35], [0, 35], [0, 35])),
        (KINDS[5], ([35, 26, 0], [35, 26, 0], [35, 26, 0], [35, 0], [35, 0])),
    ],
    ids=KIND_IDS,
)
def test_update_in_a_bucket(
    maps: Maps, kind: tuple[MapType, int], walks: tuple[list[int], ...]
) -> None:
    """Inserts go to the head; an update moves the key to the head where the kernel swaps
    elements, not where it copies in place (per-CPU); a refused update changes nothing; a delete
    closes the gap."""
    map_type, flags = kind
    table = new_map(maps, map_type, 4, 8, flags | ZERO_SEED)
    b = maps.backend
    seen = []
    for key in SAME_BUCKET:
        table.insert(key)
    seen.append(table.walk())
    table.insert(SAME_BUCKET[0])
    seen.append(table.walk())
    table.insert(SAME_BUCKET[1], EXIST)
    seen.append(table.walk())
    assert update(b, table.fd, SAME_BUCKET[0], table.value(SAME_BUCKET[0]), NOEXIST) == "EEXIST"
    table.delete(SAME_BUCKET[1])
    seen.append(table.walk())
    assert next_key(b, table.fd, SAME_BUCKET[1], 4) == (0, seen[-1][0])  # restarts at the first
    seen.append(table.walk())
    assert seen == [[u32(n) for n in walk] for walk in walks]
    assert seen[-1] == table.model.walk()


# -- walks -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("key_size", [4, 8, 6, 16])
@pytest.mark.parametrize("max_entries", [1, 5, 64, 300])
def test_walk_order(maps: Maps, kind: tuple[MapType, int], key_size: int, max_entries: int) -> None:
    """Every GET_NEXT_KEY of a walk over keys inserted in a shuffled order."""
    map_type, flags = kind
    table = new_map(maps, map_type, key_size, max(max_entries, 8), flags | ZERO_SEED)
    count = min(max_entries, 40)
    numbers = random.Random(key_size * 1000 + max_entries).sample(range(10_000), count)
    for number in numbers:
        table.insert(make_key(number, key_size))
    assert table.walk() == table.model.walk()
    assert next_key(maps.backend, table.fd, make_key(99_999, key_size), key_size) == (
        0,
        table.model.walk()[0],
    )


@pytest.mark.parametrize("key_size", [4, 8, 6, 16])
@pytest.mark.parametrize("flags", [0, NO_PREALLOC], ids=["prealloc", "no-prealloc"])
def test_walk_after_random_operations(maps: Maps, key_size: int, flags: int) -> None:
    """Inserts, updates (with each flag) and deletes in a random order, walked every ten steps;
    16 buckets for 12 entries, so buckets hold several keys."""
    table = new_map(maps, MapType.HASH, key_size, 12, flags | ZERO_SEED)
    rng = random.Random(key_size + flags)
    pool = [make_key(n, key_size) for n in range(20)]
    for step in range(120):
        key = rng.choice(pool)
        present = key in table.model.linked
        if present and rng.random() < 0.4:
            table.delete(key)
        elif present:
            table.insert(key, rng.choice([ANY, EXIST]))
        elif len(table.model.linked) < 12:
            table.insert(key, rng.choice([ANY, NOEXIST]))
        if step % 10 == 9:
            assert table.walk() == table.model.walk(), step


# -- batches ---------------------------------------------------------------------------------------
def crowded(maps: Maps, map_type: MapType = MapType.HASH, key_size: int = 4) -> OrderedMap:
    """A map of 16 buckets holding 3 keys in bucket 0, 2 in bucket 5 and 1 in bucket 9 and 15."""
    table = new_map(maps, map_type, key_size, 16)
    for bucket, count in ((0, 3), (5, 2), (9, 1), (15, 1)):
        for key in keys_in_bucket(bucket, 16, key_size, count):
            table.insert(key)
    return table


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("key_size", [4, 6])
def test_batch_chunks(maps: Maps, count: int, key_size: int) -> None:
    """LOOKUP_BATCH in steps of `count` from bucket 0: whole buckets per step, the token the
    bucket to go on from, ENOSPC when the next bucket alone is larger than `count`, ENOENT and
    n_buckets at the end."""
    table = crowded(maps, key_size=key_size)
    token = 0
    for _ in range(8):
        expected = table.model.batch(token, count)
        out = batch(
            maps.backend,
            LOOKUP,
            table.fd,
            count,
            key_room=8 * key_size,
            value_room=64,
            in_batch=u32(token),
        )
        result, keys, out_batch = expected
        assert (out.result, out.count, out.out_batch) == (result, len(keys), u32(out_batch))
        assert out.keys[: len(keys) * key_size] == b"".join(keys)
        assert out.values[: len(keys) * 8] == b"".join(table.value(k) for k in keys)
        if result != 0:
            break
        token = out_batch


@pytest.mark.parametrize("map_type", [MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH])
def test_batch_lookup_and_delete(maps: Maps, map_type: MapType) -> None:
    """LOOKUP_AND_DELETE_BATCH takes whole buckets: after an ENOSPC nothing is gone; after a
    step, exactly the buckets it returned."""
    table = crowded(maps, map_type)
    b = maps.backend
    value_room = 8 * table.value_size
    refused = batch(b, LOOKUP_AND_DELETE, table.fd, 2, key_room=32, value_room=value_room)
    assert (refused.result, refused.count, refused.out_batch) == ("ENOSPC", 0, u32(0))
    assert table.walk() == table.model.walk()
    step = batch(b, LOOKUP_AND_DELETE, table.fd, 4, key_room=32, value_room=value_room)
    first = table.model.buckets()[0]
    assert (step.result, step.count, step.out_batch) == (0, 3, u32(5))
    assert step.keys[:12] == b"".join(first)
    for key in first:
        table.model.unlink(key)
    assert table.walk() == table.model.walk()
    rest = table.model.walk()
    last = batch(
        b,
        LOOKUP_AND_DELETE,
        table.fd,
        8,
        key_room=32,
        value_room=value_room,
        in_batch=step.out_batch,
    )
    assert (last.result, last.count, last.out_batch) == ("ENOENT", 4, u32(16))
    assert last.keys[:16] == b"".join(rest)
    assert table.walk() == []


def test_batch_enospc_from_a_later_bucket(maps: Maps) -> None:
    """The ENOSPC token is the bucket that did not fit, also when the walk started before it;
    count covering the bucket exactly returns it whole."""
    table = crowded(maps)
    b = maps.backend
    out = batch(b, LOOKUP, table.fd, 1, key_room=32, value_room=64, in_batch=u32(1))
    assert (out.result, out.count, out.out_batch) == ("ENOSPC", 0, u32(5))
    out = batch(b, LOOKUP, table.fd, 2, key_room=32, value_room=64, in_batch=u32(1))
    assert (out.result, out.count, out.out_batch) == (0, 2, u32(9))
    out = batch(b, LOOKUP, table.fd, 1, key_room=32, value_room=64, in_batch=u32(10))
    assert (out.result, out.count, out.out_batch) == ("ENOENT", 1, u32(16))
    assert out.keys[:4] == table.model.buckets()[15][0]


def test_batch_count_exactly_the_rest(maps: Maps) -> None:
    """count equal to every remaining element: the walk still reaches the end (ENOENT)."""
    table = crowded(maps)
    out = batch(maps.backend, LOOKUP, table.fd, 7, key_room=32, value_room=64)
    assert (out.result, out.count, out.out_batch) == ("ENOENT", 7, u32(16))
    assert out.keys[:28] == b"".join(table.model.walk())


def hash_of_maps_walks(maps: Maps, flags: int) -> list[list[bytes]]:
    """The walks of a HASH_OF_MAPS after inserting SAME_BUCKET, then replacing the first key's
    inner map (BPF_ANY) and the second's (BPF_EXIST)."""
    b = maps.backend
    inner = [maps.new(MapType.ARRAY, 4, 4, 1) for _ in range(2)]
    fd = maps.new(MapType.HASH_OF_MAPS, 4, 4, 8, ZERO_SEED | flags, inner_map_fd=inner[0])
    for key in SAME_BUCKET:
        assert update(b, fd, key, u32(inner[0])) == 0
    walks = [all_keys(b, fd, 4)]
    assert update(b, fd, SAME_BUCKET[0], u32(inner[1])) == 0
    walks.append(all_keys(b, fd, 4))
    assert update(b, fd, SAME_BUCKET[1], u32(inner[1]), EXIST) == 0
    walks.append(all_keys(b, fd, 4))
    out = batch(b, LOOKUP, fd, 2, key_room=16, value_room=16)
    assert (out.result, out.count, out.out_batch) == ("ENOSPC", 0, u32(0))
    return walks


@pytest.mark.parametrize("flags", [0, NO_PREALLOC], ids=["prealloc", "no-prealloc"])
def test_hash_of_maps_order(maps: Maps, flags: int) -> None:
    """Since 6.16 a HASH_OF_MAPS update replaces the inner map in place: the key stays where it
    is in its bucket."""
    assert hash_of_maps_walks(maps, flags) == [SAME_BUCKET[::-1]] * 3


# -- simulator against the live kernel -------------------------------------------------------------
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    key_size=st.sampled_from([4, 6, 8, 16]),
    max_entries=st.sampled_from([2, 8, 33, 128]),
    raw=st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=40),
    deletes=st.integers(min_value=0, max_value=10),
)
def test_walk_matches_live(
    live: Backend,
    sim_factory: Callable[..., SimBackend],
    key_size: int,
    max_entries: int,
    raw: list[bytes],
    deletes: int,
) -> None:
    """Random keys inserted (replacing where repeated), a few deleted: the simulator's and the
    live kernel's GET_NEXT_KEY walk and full LOOKUP_BATCH answer are the same bytes."""
    keys = [data[:key_size] for data in raw][:max_entries]
    results = []
    for backend in (live, sim_factory()):
        made = Maps(backend)
        try:
            fd = made.new(MapType.HASH, key_size, 8, max_entries, ZERO_SEED)
            for key in keys:
                assert update(backend, fd, key, (key * 8)[:8]) == 0
            for key in dict.fromkeys(keys[:deletes]):
                assert delete(backend, fd, key) == 0
            room = 64 * key_size
            out = batch(backend, LOOKUP, fd, 64, key_room=room, value_room=512)
            results.append((all_keys(backend, fd, key_size), out))
        finally:
            made.close_all()
    assert results[0] == results[1]


# -- simulator only --------------------------------------------------------------------------------
def sim_map(backend: Backend, fd: int) -> HashTableMap:
    assert isinstance(backend, SimBackend)
    found = backend.kernel.fds.get(fd, BpfMap)
    assert isinstance(found, HashTableMap)
    return found


def test_seed_comes_from_the_kernels_random_source(sim_factory: Callable[..., SimBackend]) -> None:
    """Without ZERO_SEED the buckets follow a hashrnd drawn from the kernel's seeded random
    source: the same kernel seed gives the same walk, the order is the model's for that hashrnd."""
    keys = [u32(n) for n in range(30)]
    walks = []
    for seed in (1, 1, 2):
        backend = sim_factory(seed=seed)
        made = Maps(backend)
        fd = made.new(MapType.HASH, 4, 8, 64)
        for key in keys:
            assert update(backend, fd, key, bytes(8)) == 0
        hashrnd = sim_map(backend, fd).hashrnd
        model = HtabModel(64, seed=hashrnd, linked=list(keys))
        walks.append(all_keys(backend, fd, 4))
        assert walks[-1] == model.walk()
        made.close_all()
    assert walks[0] == walks[1]
    assert walks[0] != walks[2]


def test_hash_of_maps_update_moved_the_key_before_6_16(
    sim_factory: Callable[..., SimBackend],
) -> None:
    """Before 6.16 an fd htab update swapped in a new element at its bucket's head."""
    maps = Maps(sim_factory(version="6.1"))
    first, second, third = SAME_BUCKET
    assert hash_of_maps_walks(maps, 0) == [
        [third, second, first],
        [first, third, second],
        [second, first, third],
    ]
    maps.close_all()


def test_huge_bucket_array_costs_nothing_until_used(sim_factory: Callable[..., SimBackend]) -> None:
    """A NO_PREALLOC map of 2^27 buckets walks its few keys in bucket order."""
    backend = sim_factory()
    made = Maps(backend)
    fd = made.new(MapType.HASH, 8, 8, 1 << 27, NO_PREALLOC | ZERO_SEED)
    model = HtabModel(1 << 27)
    for number in (5, 1 << 40, 77, 123456789):
        key = struct.pack("<Q", number)
        assert update(backend, fd, key, bytes(8)) == 0
        model.link(key)
    assert all_keys(backend, fd, 8) == model.walk()
    out = batch(backend, LOOKUP, fd, 4, key_room=32, value_room=32)
    assert (out.result, out.count, out.out_batch) == ("ENOENT", 4, u32(1 << 27))
    made.close_all()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    max_entries=st.sampled_from([3, 16, 5000]),
    ops=st.lists(
        st.tuples(st.sampled_from(["update", "delete", "walk"]), st.integers(0, 30)), max_size=80
    ),
)
def test_random_operations_follow_the_model(
    sim_factory: Callable[..., SimBackend], max_entries: int, ops: list[tuple[str, int]]
) -> None:
    """Random updates, deletes and walks on a simulated HASH with a random hashrnd (one or two
    bucket chunks, buckets emptied and refilled): every walk and the final batch are the model's."""
    backend = sim_factory(seed=max_entries + len(ops))
    table = new_map(Maps(backend), MapType.HASH, 4, max_entries, 0)
    fd = table.fd
    table.model.seed = sim_map(backend, fd).hashrnd
    for op, number in ops:
        key = u32(number)
        if op == "update" and (key in table.model.linked or len(table.model.linked) < max_entries):
            table.insert(key)
        elif op == "delete" and key in table.model.linked:
            table.delete(key)
        elif op == "walk":
            assert table.walk() == table.model.walk()
    expected = table.model.batch(0, 64)
    out = batch(backend, LOOKUP, fd, 64, key_room=256, value_room=512)
    assert (out.result, out.count) == (expected[0], len(expected[1]))
    assert out.keys[: 4 * out.count] == b"".join(expected[1])
    table.maps.close_all()


def test_bucket_lists() -> None:
    """BucketLists alone: head insertion, unlinking anywhere, chunks freed when emptied."""
    lists = BucketLists(1 << 13)
    for slot, bucket in enumerate([7, 7, 7, 5000, 1]):
        lists.link(slot, bucket)
    assert [lists.next_bucket(i) for i in (0, 2, 8, 5000, 5001)] == [1, 7, 5000, 5000, -1]
    assert lists.slots_in(7) == [2, 1, 0]
    assert lists.first() == 4
    assert [lists.after(s) for s in (4, 2, 1, 0, 3)] == [2, 1, 0, 3, -1]
    lists.unlink(1)
    lists.to_front(0)
    assert lists.slots_in(7) == [0, 2]
    lists.unlink(3)
    assert lists.next_bucket(8) == -1
    assert lists.slots_in(5000) == []
    lists.link(1, 5000)
    assert lists.after(0) == 2
    assert lists.after(2) == 1
