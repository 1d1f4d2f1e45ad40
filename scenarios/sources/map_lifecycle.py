"""Map lifecycle and iteration: a hash map and an array map created, filled, iterated (one key
at a time and in batches), updated with each flag, deleted from and closed. The hash map has
BPF_F_ZERO_SEED: without it the kernel seeds its hash at random per map, and the iteration
order differs from run to run."""

import struct

from bpfsys import bpf
from bpfsys.abi import MapFlag, MapType, UpdateFlag
from bpfsys.syscall import SyscallError


def key(n: int) -> bytes:
    return struct.pack("<I", n)


def value(n: int) -> bytes:
    return struct.pack("<Q", n)


with bpf.map_create(MapType.HASH, 4, 8, 8, name="lifecycle", flags=MapFlag.ZERO_SEED) as hash_map:
    for n in range(1, 6):
        bpf.map_update_elem(hash_map, key(n), value(n * 100))
    for flags, n in ((UpdateFlag.NOEXIST, 1), (UpdateFlag.EXIST, 42)):
        try:
            bpf.map_update_elem(hash_map, key(n), value(0), flags=flags)
        except SyscallError as exc:
            print(f"update {n} with {flags.name}: errno {exc.errno}")
    bpf.map_update_elem(hash_map, key(1), value(111), flags=UpdateFlag.EXIST)
    walked, k = [], None
    while (k := bpf.map_get_next_key(hash_map, k, 4)) is not None:
        walked.append(struct.unpack("<I", k)[0])
    print("walk:", sorted(walked))
    print("lookup 1:", bpf.map_lookup_elem(hash_map, key(1), 8))
    print("delete 2:", bpf.map_delete_elem(hash_map, key(2)))
    print("delete 2 again:", bpf.map_delete_elem(hash_map, key(2)))
    print("lookup 2:", bpf.map_lookup_elem(hash_map, key(2), 8))
    page = bpf.map_lookup_batch(hash_map, 4, 8, 16)
    print("batch:", len(page.keys), "elements, last page:", page.next_batch is None)
    for n in range(6, 10):
        try:
            bpf.map_update_elem(hash_map, key(n), value(n))
        except SyscallError as exc:
            print(f"update {n}: errno {exc.errno}")

with bpf.map_create(MapType.ARRAY, 4, 8, 4, name="array") as array:
    bpf.map_update_elem(array, key(3), value(3))
    print("array lookup 0:", bpf.map_lookup_elem(array, key(0), 8))
    print("array lookup 4:", bpf.map_lookup_elem(array, key(4), 8))
    try:
        bpf.map_delete_elem(array, key(0))
    except SyscallError as exc:
        print("array delete: errno", exc.errno)
    k = None
    while (k := bpf.map_get_next_key(array, k, 4)) is not None:
        pass
    print("array batch:", len(bpf.map_lookup_batch(array, 4, 8, 2).keys))
