"""bpf_ringbuf_output / reserve / submit / discard / query on RINGBUF maps.

The ring's rules are kernelsim.maps.ringbuf_producer's; here is how programs reach them:

* output(map, data, size, flags): flags other than BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP
  -EINVAL, no room -EAGAIN, else 0;
* reserve(map, size, flags): any flag gives NULL (0); no room NULL; else a pointer to `size`
  writable bytes (a RINGBUF region: the program writes its record there, and submit or
  discard copies it into the ring before the header changes);
* submit / discard(sample, flags): commit the reservation the pointer starts (flags only choose
  the wakeup); they return nothing the program may use (0);
* query(map, flags): BPF_RB_AVAIL_DATA, RING_SIZE, CONS_POS, PROD_POS; other flags 0.
"""

from __future__ import annotations

import attrs

from bpfsys.abi import BpfFunc
from kernelsim.maps.ringbuf import RingbufMap
from kernelsim.prog.interpreter.errors import ProgramFault
from kernelsim.prog.interpreter.helpers import kernel_helper
from kernelsim.prog.interpreter.memory import Region, RegionKind
from kernelsim.prog.interpreter.runtime import RunEnv


@attrs.frozen
class Reservation:
    """What a reservation region stands for: the ring and the record's position."""

    ring: RingbufMap
    position: int


def _ring(env: RunEnv, map_ptr: int) -> RingbufMap:
    bpf_map = env.map_from_handle(map_ptr)
    if not isinstance(bpf_map, RingbufMap):
        raise ProgramFault(f"ring buffer helper on a {bpf_map.map_type.name} map")
    return bpf_map


@kernel_helper(BpfFunc.RINGBUF_OUTPUT)
def ringbuf_output(env: RunEnv, map_ptr: int, data: int, size: int, flags: int, r5: int) -> int:
    ring = _ring(env, map_ptr)
    raw = env.space.read_bytes(data, size & 0xFFFFFFFF) if size else b""
    return ring.output(raw, flags)


@kernel_helper(BpfFunc.RINGBUF_RESERVE)
def ringbuf_reserve(env: RunEnv, map_ptr: int, size: int, flags: int, r4: int, r5: int) -> int:
    ring = _ring(env, map_ptr)
    if flags:
        return 0
    position = ring.producer.reserve(size)
    if position is None:
        return 0
    region = Region(
        RegionKind.RINGBUF,
        f"ring buffer record of map {ring.name!r}",
        bytearray(size),
        obj=Reservation(ring, position),
    )
    return env.space.map(region)


def _commit(env: RunEnv, sample: int, flags: int, *, discard: bool) -> int:
    region, offset = env.space.region_at(sample, 0, "commit")
    reservation = region.obj
    if region.kind is not RegionKind.RINGBUF or offset or not isinstance(reservation, Reservation):
        raise ProgramFault(f"{sample:#x} is not a ring buffer reservation")
    env.space.unmap(region)
    reservation.ring.commit(reservation.position, bytes(region.buf), discard=discard, flags=flags)
    return 0


@kernel_helper(BpfFunc.RINGBUF_SUBMIT)
def ringbuf_submit(env: RunEnv, sample: int, flags: int, r3: int, r4: int, r5: int) -> int:
    return _commit(env, sample, flags, discard=False)


@kernel_helper(BpfFunc.RINGBUF_DISCARD)
def ringbuf_discard(env: RunEnv, sample: int, flags: int, r3: int, r4: int, r5: int) -> int:
    return _commit(env, sample, flags, discard=True)


@kernel_helper(BpfFunc.RINGBUF_QUERY)
def ringbuf_query(env: RunEnv, map_ptr: int, flags: int, r3: int, r4: int, r5: int) -> int:
    return _ring(env, map_ptr).producer.query(flags)
