"""Per-CPU maps: an array and a hash map whose values are one 8-aligned slot per possible CPU."""

import struct

from bpfsys import bpf
from bpfsys.abi import MapType

cpus = bpf.possible_cpus()
for map_type in (MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH):
    size = bpf.percpu_value_size(4)
    with bpf.map_create(map_type, 4, 4, 4, name="percpu") as fd:
        values = [struct.pack("<I", 10 * cpu + 1) for cpu in range(cpus)]
        bpf.map_update_elem(fd, struct.pack("<I", 1), bpf.join_percpu(values, 4))
        raw = bpf.map_lookup_elem(fd, struct.pack("<I", 1), size)
        assert raw is not None
        print(map_type.name, [struct.unpack("<I", v)[0] for v in bpf.split_percpu(raw, 4)])
        print(map_type.name, "key 2:", bpf.map_lookup_elem(fd, struct.pack("<I", 2), size))
