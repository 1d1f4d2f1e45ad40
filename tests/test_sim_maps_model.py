"""Property tests of the simulated maps: a HASH and an LRU_HASH map driven by hypothesis against a
Python model (a dict, and an LRU-ordered dict), and random attr bytes for every MAP_* command
(only OSError escapes, and no object outlives its fds)."""

from __future__ import annotations

import ctypes
import struct
from collections import OrderedDict
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from maps_support import Maps, all_keys, delete, lookup, lookup_and_delete, update

from bpfsys.abi import ATTR_OF_COMMAND, BpfCmd, MapBatchAttr, MapCreateAttr, MapElemAttr, MapType
from kernelsim.backend import SimBackend

MAX_ENTRIES = 6
ANY, NOEXIST, EXIST = 0, 1, 2

keys = st.integers(0, 11).map(lambda k: struct.pack("<Q", k))
values = st.integers(0, 2**64 - 1).map(lambda v: struct.pack("<Q", v))
update_flags = st.sampled_from([ANY, NOEXIST, EXIST, 3])


def expected_update(present: bool, full: bool, flags: int) -> int | str:
    if flags > EXIST:
        return "EINVAL"
    if present and flags == NOEXIST:
        return "EEXIST"
    if not present and flags == EXIST:
        return "ENOENT"
    if not present and full:
        return "E2BIG"
    return 0


class HashMapsAgainstModels(RuleBasedStateMachine):
    """HASH: a dict with E2BIG when full. LRU_HASH: an ordered dict where an update on a full
    map first drops the least recently updated key (even when the update then fails)."""

    def __init__(self) -> None:
        super().__init__()
        self.sim = SimBackend()
        self.maps = Maps(self.sim)
        self.hash = self.maps.new(MapType.HASH, 8, 8, MAX_ENTRIES)
        self.lru = self.maps.new(MapType.LRU_HASH, 8, 8, MAX_ENTRIES)
        self.hash_model: dict[bytes, bytes] = {}
        self.lru_model: OrderedDict[bytes, bytes] = OrderedDict()

    @rule(key=keys, value=values, flags=update_flags)
    def update(self, key: bytes, value: bytes, flags: int) -> None:
        model = self.hash_model
        expected = expected_update(key in model, len(model) >= MAX_ENTRIES, flags)
        assert update(self.sim, self.hash, key, value, flags) == expected
        if expected == 0:
            model[key] = value

        lru = self.lru_model
        if flags <= EXIST and len(lru) >= MAX_ENTRIES:
            lru.popitem(last=False)
        expected = expected_update(key in lru, False, flags)
        assert update(self.sim, self.lru, key, value, flags) == expected
        if expected == 0:
            lru[key] = value
            lru.move_to_end(key)

    @rule(key=keys)
    def lookup(self, key: bytes) -> None:
        for fd, model in ((self.hash, self.hash_model), (self.lru, self.lru_model)):
            value = model.get(key)
            expected = ("ENOENT", bytes(8)) if value is None else (0, value)
            assert lookup(self.sim, fd, key, 8) == expected

    @rule(key=keys)
    def delete(self, key: bytes) -> None:
        for fd, model in ((self.hash, self.hash_model), (self.lru, self.lru_model)):
            assert delete(self.sim, fd, key) == (0 if model.pop(key, None) else "ENOENT")

    @rule(key=keys)
    def lookup_and_delete(self, key: bytes) -> None:
        for fd, model in ((self.hash, self.hash_model), (self.lru, self.lru_model)):
            value = model.pop(key, None)
            expected = ("ENOENT", bytes(8)) if value is None else (0, value)
            assert lookup_and_delete(self.sim, fd, key, 8) == expected

    @invariant()
    def walks_match(self) -> None:
        assert sorted(all_keys(self.sim, self.hash, 8)) == sorted(self.hash_model)
        assert sorted(all_keys(self.sim, self.lru, 8)) == sorted(self.lru_model)

    def teardown(self) -> None:
        self.maps.close_all()
        assert self.sim.kernel.live_objects() == {}


HashMapsAgainstModels.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None
)
TestHashMapsAgainstModels = HashMapsAgainstModels.TestCase


# -- random attrs --------------------------------------------------------------------------------
MAP_COMMANDS = [
    BpfCmd.MAP_CREATE,
    BpfCmd.MAP_LOOKUP_ELEM,
    BpfCmd.MAP_UPDATE_ELEM,
    BpfCmd.MAP_DELETE_ELEM,
    BpfCmd.MAP_GET_NEXT_KEY,
    BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM,
    BpfCmd.MAP_FREEZE,
    BpfCmd.MAP_LOOKUP_BATCH,
    BpfCmd.MAP_LOOKUP_AND_DELETE_BATCH,
    BpfCmd.MAP_UPDATE_BATCH,
    BpfCmd.MAP_DELETE_BATCH,
]
POINTERS: dict[type[Any], tuple[str, ...]] = {
    MapCreateAttr: ("excl_prog_hash",),
    MapElemAttr: ("key", "value"),
    MapBatchAttr: ("in_batch", "out_batch", "keys", "values"),
}
FDS: dict[type[Any], tuple[str, ...]] = {
    MapCreateAttr: ("inner_map_fd", "btf_fd", "map_token_fd"),
    MapElemAttr: ("map_fd",),
    MapBatchAttr: ("map_fd",),
}
SMALL: dict[type[Any], tuple[str, ...]] = {
    MapCreateAttr: ("key_size", "value_size", "max_entries", "map_type", "numa_node"),
    MapBatchAttr: ("count",),
}
"""Fields kept small: every copy the kernel makes must stay inside the scratch buffer."""
SCRATCH = 1 << 20
WINDOW = 1 << 16


@given(data=st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_attrs_only_raise_oserror(data: st.DataObject) -> None:
    sim = SimBackend()
    scratch = ctypes.create_string_buffer(SCRATCH)
    base = ctypes.addressof(scratch)
    maps = Maps(sim)
    fds = [
        maps.new(MapType.HASH, 8, 8, 4),
        maps.new(MapType.ARRAY, 4, 8, 4),
        maps.new(MapType.QUEUE, 0, 8, 4),
        maps.new(MapType.PERCPU_HASH, 4, 4, 4),
    ]
    fds.append(maps.new(MapType.ARRAY_OF_MAPS, 4, 4, 2, inner_map_fd=fds[1]))
    pointer = st.one_of(
        st.sampled_from([0, 8, 1 << 63, 2**64 - 8]),
        st.integers(0, WINDOW).map(lambda off: base + off),
    )
    for _ in range(data.draw(st.integers(1, 6))):
        cmd = data.draw(st.sampled_from(MAP_COMMANDS))
        attr_type = ATTR_OF_COMMAND[cmd]
        size = ctypes.sizeof(attr_type)
        attr = attr_type.from_buffer_copy(data.draw(st.binary(min_size=size, max_size=size)))
        for field in POINTERS[attr_type]:
            setattr(attr, field, data.draw(pointer))
        for field in FDS[attr_type]:
            setattr(attr, field, data.draw(st.sampled_from([*fds, 0, 9999, 2**32 - 1])))
        for field in SMALL.get(attr_type, ()):
            setattr(attr, field, data.draw(st.integers(0, 40)))
        try:
            result = sim.bpf(cmd, attr, data.draw(st.sampled_from([size, size // 2, 0])))
        except OSError:
            continue
        if cmd == BpfCmd.MAP_CREATE:
            fds.append(maps.adopt(result))
    maps.close_all()
    assert sim.kernel.live_objects() == {}
