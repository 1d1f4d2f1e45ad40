"""The same map workload through bpfsys on the simulated and the live kernel.

Workload: create a HASH map (4-byte keys, 8-byte values), 10k updates, 10k lookups, a
GET_NEXT_KEY walk over all keys, 10k deletes. Printed per phase as time on each backend and the
ratio sim/live (target: the simulator no slower than the live kernel, ratio <= 1).

Memory: a simulated HASH 8/8 map filled with 1M entries, measured with tracemalloc (target: at
most 160 bytes an entry), beside the `memlock` the kernel (live or simulated) reports in fdinfo.

    python benchmarks/bench_maps.py [--entries 10000] [--fill 1000000] [--no-live]
"""

from __future__ import annotations

import argparse
import gc
import struct
import time
import tracemalloc
from collections.abc import Callable

from bpfsys import bpf
from bpfsys.abi import MapType
from bpfsys.backend import Backend, LiveBackend
from kernelsim import SimBackend

Phase = tuple[str, Callable[[], None]]


def workload(backend: Backend, entries: int) -> dict[str, float]:
    """Seconds per phase of the workload on `backend`."""
    keys = [struct.pack("<I", i) for i in range(entries)]
    value = struct.pack("<Q", 7)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    fd = bpf.map_create(MapType.HASH, 4, 8, entries, backend=backend)
    timings["create"] = time.perf_counter() - start
    with fd:

        def update() -> None:
            for key in keys:
                bpf.map_update_elem(fd, key, value)

        def lookup() -> None:
            for key in keys:
                bpf.map_lookup_elem(fd, key, 8)

        def walk() -> None:
            key: bytes | None = None
            seen = 0
            while (key := bpf.map_get_next_key(fd, key, 4)) is not None:
                seen += 1
            assert seen == entries, seen

        def delete() -> None:
            for key in keys:
                bpf.map_delete_elem(fd, key)

        phases: list[Phase] = [
            ("update", update),
            ("lookup", lookup),
            ("get_next_key walk", walk),
            ("delete", delete),
        ]
        for name, run in phases:
            start = time.perf_counter()
            run()
            timings[name] = time.perf_counter() - start
    return timings


def fdinfo_memlock(backend: Backend, fd: int) -> int:
    for line in backend.read_file(f"/proc/self/fdinfo/{fd}").decode().splitlines():
        if line.startswith("memlock:"):
            return int(line.split()[1])
    raise RuntimeError("no memlock line in fdinfo")


def memory_per_entry(fill: int) -> tuple[float, int]:
    """(tracemalloc bytes per entry of a filled sim HASH 8/8 map, the sim's fdinfo memlock)."""
    backend = SimBackend()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fd = bpf.map_create(MapType.HASH, 8, 8, fill, backend=backend)
    value = bytes(8)
    for i in range(fill):
        bpf.map_update_elem(fd, struct.pack("<Q", i), value)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    memlock = fdinfo_memlock(backend, fd.fileno())
    fd.close()
    return used / fill, memlock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--fill", type=int, default=1_000_000)
    parser.add_argument("--no-live", action="store_true", help="skip the live kernel")
    args = parser.parse_args()

    sim = workload(SimBackend(), args.entries)
    live: dict[str, float] | None = None
    if not args.no_live:
        try:
            live = workload(LiveBackend(), args.entries)
        except OSError as exc:
            print(f"live kernel unavailable: {exc}")
    print(f"map workload, {args.entries} entries (seconds)")
    print(f"{'phase':<20}{'sim':>10}{'live':>10}{'sim/live':>10}")
    for phase, sim_s in sim.items():
        live_s = live[phase] if live else float("nan")
        print(f"{phase:<20}{sim_s:>10.4f}{live_s:>10.4f}{sim_s / live_s:>10.2f}")
    total_sim, total_live = sum(sim.values()), sum(live.values()) if live else float("nan")
    print(f"{'total':<20}{total_sim:>10.4f}{total_live:>10.4f}{total_sim / total_live:>10.2f}")

    per_entry, memlock = memory_per_entry(args.fill)
    print(f"\nsim HASH 8/8 with {args.fill} entries: {per_entry:.1f} bytes/entry (target <= 160)")
    print(f"fdinfo memlock (as the kernel reports it): {memlock} ({memlock / args.fill:.1f}/entry)")
    if live is not None:
        with bpf.map_create(MapType.HASH, 8, 8, args.fill, backend=LiveBackend()) as fd:
            live_memlock = fdinfo_memlock(LiveBackend(), fd.fileno())
        print(f"live kernel memlock for the same map: {live_memlock}")


if __name__ == "__main__":
    main()
