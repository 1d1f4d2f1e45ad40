"""bpf_loop and bpf_for_each_map_elem: helpers that run a callback subprogram.

The callback is a subprogram the program loads with ld_imm64 (BPF_PSEUDO_FUNC); the helper runs
it through `RunEnv.call_function` (each call a new frame, its instructions charged to the run).

* loop(nr_loops, callback, ctx, flags): flags -EINVAL; nr_loops (u32) above BPF_MAX_LOOPS
  (8 Mi) -E2BIG; callback(i, ctx) for i = 0.. until it returns non-zero: then i + 1, else
  nr_loops.
* for_each_map_elem(map, callback, ctx, flags): flags -EINVAL; callback(map, &key, &value,
  ctx) for each element in the map's order (array: every index, per-CPU arrays this CPU's
  slot; hash maps: their get_next_key order) until it returns non-zero; the number of calls.
  The key is a read-only copy, the value the element itself (writable unless the map is
  read-only for programs). Map types without map_for_each_callback are refused by the
  verifier (here: a ProgramFault).
"""

from __future__ import annotations

import errno
from typing import Any, Final

from bpfsys.abi import BpfFunc, MapType
from kernelsim.prog.interpreter.errors import ProgramFault
from kernelsim.prog.interpreter.helpers import kernel_helper
from kernelsim.prog.interpreter.memory import Region, RegionKind
from kernelsim.prog.interpreter.runtime import RunEnv

BPF_MAX_LOOPS: Final = 8 * 1024 * 1024
FOR_EACH_TYPES: Final = frozenset(
    {MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.HASH, MapType.PERCPU_HASH,
     MapType.LRU_HASH, MapType.LRU_PERCPU_HASH}
)  # fmt: skip


@kernel_helper(BpfFunc.LOOP)
def loop(env: RunEnv, nr_loops: int, callback: int, ctx: int, flags: int, r5: int) -> int:
    if flags:
        return -errno.EINVAL
    nr_loops &= 0xFFFFFFFF
    if nr_loops > BPF_MAX_LOOPS:
        return -errno.E2BIG
    for index in range(nr_loops):
        if env.call_function(callback, (index, ctx, 0, 0, 0)):
            return index + 1
    return nr_loops


def _keys(bpf_map: Any) -> list[bytes]:
    if bpf_map.map_type in (MapType.ARRAY, MapType.PERCPU_ARRAY):
        return [index.to_bytes(4, "little") for index in range(bpf_map.max_entries)]
    keys: list[bytes] = []
    key: bytes | None = None
    while True:
        try:
            key = bpf_map.get_next_key(key)
        except OSError:
            return keys
        keys.append(key)


@kernel_helper(BpfFunc.FOR_EACH_MAP_ELEM)
def for_each_map_elem(
    env: RunEnv, map_ptr: int, callback: int, ctx: int, flags: int, r5: int
) -> int:
    bpf_map = env.map_from_handle(map_ptr)
    if bpf_map.map_type not in FOR_EACH_TYPES:
        raise ProgramFault(f"bpf_for_each_map_elem on a {bpf_map.map_type.name} map")
    if flags:
        return -errno.EINVAL
    calls = 0
    for key in _keys(bpf_map):
        value = env.value_pointer(bpf_map, key)
        if not value:
            continue
        key_region = Region(RegionKind.MEMORY, "key", bytearray(key), writable=False)
        key_address = env.space.map(key_region)
        try:
            stop = env.call_function(callback, (map_ptr, key_address, value, ctx, 0))
        finally:
            env.space.unmap(key_region)
        calls += 1
        if stop:
            break
    return calls
