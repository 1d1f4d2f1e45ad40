"""The simulated kernel's helpers that the interpreter itself provides.

map_lookup_elem / map_update_elem / map_delete_elem work on the map's program-side operations
(`BpfMap.value_view(key, cpu)`, a writable view of the element, `update_from_prog`,
`delete_from_prog`); ktime_get_ns reads the
virtual clock; get_prandom_u32 draws from the kernel's seeded random source;
get_smp_processor_id is the run's CPU; tail_call replaces the running frame by the program in
a PROG_ARRAY slot (the map provides
`program_at(index) -> BpfProgram | None`). Errors come back as negative errno, as in the
kernel. bpf_trace_printk and the helpers of events (perf output, ring buffer, probe reads, task
and clock helpers) live in kernelsim.helpers.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from bpfsys.abi import BpfFunc, MapType
from kernelsim.prog.interpreter.errors import ProgramFault, TailCall
from kernelsim.prog.interpreter.helpers import kernel_helper
from kernelsim.prog.interpreter.runtime import MAX_TAIL_CALL_CNT

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel
    from kernelsim.prog.interpreter.runtime import RunEnv


def _kernel(env: RunEnv) -> Kernel:
    if env.kernel is None:
        raise ProgramFault("this helper needs a kernel, and the run has none")
    return env.kernel


def _key(env: RunEnv, bpf_map: Any, addr: int) -> bytes:
    return env.space.read_bytes(addr, bpf_map.key_size)


@kernel_helper(BpfFunc.MAP_LOOKUP_ELEM)
def map_lookup_elem(env: RunEnv, map_ptr: int, key: int, r3: int, r4: int, r5: int) -> int:
    bpf_map = env.map_from_handle(map_ptr)
    return env.value_pointer(bpf_map, _key(env, bpf_map, key))


@kernel_helper(BpfFunc.MAP_UPDATE_ELEM)
def map_update_elem(env: RunEnv, map_ptr: int, key: int, value: int, flags: int, r5: int) -> int:
    bpf_map = env.map_from_handle(map_ptr)
    key_bytes = _key(env, bpf_map, key)
    value_bytes = env.space.read_bytes(value, bpf_map.value_size)
    try:
        bpf_map.update_from_prog(key_bytes, value_bytes, flags, env.cpu)
    except OSError as error:
        return -(error.errno or errno.EINVAL)
    env.forget_value(bpf_map, key_bytes)
    return 0


@kernel_helper(BpfFunc.MAP_DELETE_ELEM)
def map_delete_elem(env: RunEnv, map_ptr: int, key: int, r3: int, r4: int, r5: int) -> int:
    bpf_map = env.map_from_handle(map_ptr)
    key_bytes = _key(env, bpf_map, key)
    try:
        bpf_map.delete_from_prog(key_bytes)
    except OSError as error:
        return -(error.errno or errno.EINVAL)
    env.forget_value(bpf_map, key_bytes)
    return 0


@kernel_helper(BpfFunc.KTIME_GET_NS)
def ktime_get_ns(env: RunEnv, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return _kernel(env).now_ns


@kernel_helper(BpfFunc.GET_PRANDOM_U32)
def get_prandom_u32(env: RunEnv, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return _kernel(env).random.getrandbits(32)


@kernel_helper(BpfFunc.GET_SMP_PROCESSOR_ID)
def get_smp_processor_id(env: RunEnv, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return env.cpu


@kernel_helper(BpfFunc.TAIL_CALL)
def tail_call(env: RunEnv, ctx: int, map_ptr: int, index: int, r4: int, r5: int) -> int:
    """On success the frame is replaced (TailCall); on failure the program goes on."""
    prog_array = env.map_from_handle(map_ptr)
    if prog_array.map_type != MapType.PROG_ARRAY:
        raise ProgramFault(f"tail call through a {prog_array.map_type.name} map")
    index &= 0xFFFFFFFF
    if index >= prog_array.max_entries or env.tail_calls >= MAX_TAIL_CALL_CNT:
        return 0
    env.tail_calls += 1
    target = prog_array.program_at(index)
    if target is None:
        return 0
    raise TailCall(env.entry(target.executable()), ctx)
