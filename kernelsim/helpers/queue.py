"""bpf_map_push_elem / bpf_map_pop_elem / bpf_map_peek_elem on QUEUE, STACK and BLOOM_FILTER.

The maps' own operations decide (kernelsim.maps.queue_stack, kernelsim.maps.bloom_filter):

| helper | queue / stack                                  | bloom filter                     |
|--------|------------------------------------------------|----------------------------------|
| push   | 0; full -E2BIG (BPF_EXIST overwrites the       | 0; flags other than BPF_ANY      |
|        | oldest); flags NOEXIST or > EXIST -EINVAL      | -EINVAL                          |
| pop    | 0 and the value; empty -ENOENT, value zeroed   | (refused by the verifier)        |
| peek   | 0 and the value; empty -ENOENT, value zeroed   | 0 maybe present; -ENOENT absent  |
"""

from __future__ import annotations

import errno

from bpfsys.abi import BpfFunc
from kernelsim.helpers.common import write_out
from kernelsim.maps.bloom_filter import BloomFilterMap
from kernelsim.maps.queue_stack import QueueStackMap
from kernelsim.prog.interpreter.errors import ProgramFault
from kernelsim.prog.interpreter.helpers import kernel_helper
from kernelsim.prog.interpreter.runtime import RunEnv


def _map(env: RunEnv, map_ptr: int) -> QueueStackMap | BloomFilterMap:
    bpf_map = env.map_from_handle(map_ptr)
    if not isinstance(bpf_map, QueueStackMap | BloomFilterMap):
        raise ProgramFault(f"push/pop/peek on a {bpf_map.map_type.name} map")
    return bpf_map


@kernel_helper(BpfFunc.MAP_PUSH_ELEM)
def map_push_elem(env: RunEnv, map_ptr: int, value: int, flags: int, r4: int, r5: int) -> int:
    bpf_map = _map(env, map_ptr)
    data = env.space.read_bytes(value, bpf_map.value_size)
    try:
        bpf_map.push(data, flags)
    except OSError as error:
        return -(error.errno or errno.EINVAL)
    return 0


def _take(env: RunEnv, map_ptr: int, value: int, *, remove: bool) -> int:
    bpf_map = _map(env, map_ptr)
    if isinstance(bpf_map, BloomFilterMap):
        if remove:
            raise ProgramFault("bpf_map_pop_elem on a bloom filter")
        try:
            bpf_map.peek(env.space.read_bytes(value, bpf_map.value_size))
        except OSError as error:
            return -(error.errno or errno.EINVAL)
        return 0
    try:
        data = bpf_map.pop() if remove else bpf_map.peek()
    except OSError as error:
        write_out(env, value, bytes(bpf_map.value_size))
        return -(error.errno or errno.EINVAL)
    write_out(env, value, data)
    return 0


@kernel_helper(BpfFunc.MAP_POP_ELEM)
def map_pop_elem(env: RunEnv, map_ptr: int, value: int, r3: int, r4: int, r5: int) -> int:
    return _take(env, map_ptr, value, remove=True)


@kernel_helper(BpfFunc.MAP_PEEK_ELEM)
def map_peek_elem(env: RunEnv, map_ptr: int, value: int, r3: int, r4: int, r5: int) -> int:
    return _take(env, map_ptr, value, remove=False)
