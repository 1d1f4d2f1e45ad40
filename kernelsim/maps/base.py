"""`BpfMap`: the kernel object behind a map fd, and the operations every map type provides.

Theory of operation
-------------------
A map is created from validated `MapParams` (what BPF_MAP_CREATE decoded from its attr) and then
only changes through its operations, all on raw bytes. Creation runs in the kernel's order:
`check_attr` (the type's `map_alloc_check`, before any privilege check), then `check_alloc` (what
the type's `map_alloc` refuses: sizes, memory, the inner map of a map-in-map), then `create`.

Element operations (the syscall side):

| operation            | key                        | value                                  |
|----------------------|----------------------------|----------------------------------------|
| `lookup`             | `key_size` bytes (b"" for  | returns `syscall_value_size` bytes      |
| `update`             | key_size 0: queue, stack,  | takes `syscall_value_size` bytes        |
| `delete`             | bloom filter, ringbuf)     |                                        |
| `get_next_key`       | None: the first key        | returns `key_size` bytes                |
| `lookup_and_delete`  |                            | returns `syscall_value_size` bytes      |

`syscall_value_size` is `value_size`, except per-CPU maps (`round_up(value_size, 8)` times the
possible CPUs, one slot per CPU) and fd maps (4: an fd in, an id out). Each operation returns its
result or raises the kernel's errno through `fail`; the defaults below are the kernel's answers
for a map type lacking the operation. Flag checks the syscall makes before reaching the map
(BPF_F_LOCK, access modes) live in `kernelsim.maps.commands`; the map checks its own flags.

Program side (for the interpreter): `value_view(key, cpu)` is a writable view of the stored value
(the given CPU's slot for per-CPU maps) that stays valid while the element lives, as the pointer
`bpf_map_lookup_elem` returns; `update_from_prog` / `delete_from_prog` are the helpers' update and
delete (the syscall operations, except that per-CPU maps take one `value_size` value for `cpu`).
Values live in mutable storage (bytearrays, memfd mappings) so views alias the map.

Introspection: `fdinfo()` gives the lines of /proc/self/fdinfo after the generic ones, `map_info()`
a filled `bpfsys.abi.BpfMapInfo`, `memlock()` the bytes fdinfo reports (6.18's map_mem_usage per
type; before 6.4 the footprint formula, see docs/fidelity/maps.md).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, ClassVar, Final

import attrs

from bpfsys.abi import BpfCmd, BpfMapInfo, MapFlag, MapType
from kernelsim.errors import ENOTSUPP, fail
from kernelsim.objects import KernelObject, ObjectRegistry

if TYPE_CHECKING:
    from bpfsys.backend import Mapping
    from kernelsim.kernel import Kernel

NUMA_NO_NODE: Final = -1
KMALLOC_MAX_SIZE: Final = 4 << 20
"""The largest kmalloc() (MAX_PAGE_ORDER 10 with 4 KiB pages): bounds key and value sizes."""
PCPU_MIN_UNIT_SIZE: Final = 32 << 10
"""The largest per-CPU allocation: bounds per-CPU value sizes."""
ALLOC_LIMIT: Final = 1 << 30
"""Bytes a map may need before its creation fails with ENOMEM (the simulator's stand-in for the
kernel running out of memory; the live machine refuses a petabyte the same way). Kept at 1 GiB
so that fuzzing and parallel test runs cannot exhaust the machine: a live kernel with enough
memory accepts larger maps (docs/fidelity/maps.md)."""

PERCPU_MAP_TYPES: Final = frozenset(
    {MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH, MapType.PERCPU_ARRAY}
)
FD_MAP_TYPES: Final = frozenset(
    {
        MapType.PROG_ARRAY,
        MapType.PERF_EVENT_ARRAY,
        MapType.CGROUP_ARRAY,
        MapType.ARRAY_OF_MAPS,
        MapType.HASH_OF_MAPS,
    }
)
ACCESS_MASK: Final = MapFlag.RDONLY | MapFlag.WRONLY | MapFlag.RDONLY_PROG | MapFlag.WRONLY_PROG
"""BPF_F_ACCESS_MASK."""


def round_up(value: int, align: int) -> int:
    return -(-value // align) * align


def roundup_pow_of_two(value: int) -> int:
    return 1 if value <= 1 else 1 << (value - 1).bit_length()


def disallowed_flags(flags: int, mask: int, kernel: Kernel) -> int:
    """The bits of `flags` outside `mask` or unknown to this kernel version."""
    return int(flags) & ~(int(mask) & kernel.profile.known_flags(MapFlag))


def flags_access_ok(flags: int) -> bool:
    """bpf_map_flags_access_ok: a program may not be denied both reads and writes."""
    both = MapFlag.RDONLY_PROG | MapFlag.WRONLY_PROG
    return flags & both != both


@attrs.frozen
class MapParams:
    """What BPF_MAP_CREATE asked for: the attr fields a map type looks at."""

    map_type: MapType
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    """Without BPF_F_TOKEN_FD (the kernel clears it before the type's checks)."""
    numa_node: int
    """NUMA_NO_NODE unless BPF_F_NUMA_NODE is set."""
    map_extra: int
    inner_map_fd: int
    name: bytes
    """The validated name (up to 15 bytes, no NUL)."""


class BpfMap(KernelObject):
    """A bpf map. Subclasses implement the operations their type has."""

    id_space = "map"
    anon_name = "bpf-map"
    map_types: ClassVar[tuple[MapType, ...]] = ()
    """The map types this class implements."""
    batch_commands: ClassVar[frozenset[BpfCmd]] = frozenset()
    """The batch commands this map type has (the others answer ENOTSUPP)."""

    def __init__(
        self,
        kernel: Kernel,
        registry: ObjectRegistry,
        map_type: MapType,
        key_size: int,
        value_size: int,
        max_entries: int,
        map_flags: int,
        name: bytes,
        *,
        numa_node: int = NUMA_NO_NODE,
        map_extra: int = 0,
    ) -> None:
        super().__init__(registry)
        self.kernel = kernel
        self.map_type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.map_flags = map_flags & ~int(MapFlag.RDONLY | MapFlag.WRONLY)
        """The flags the map keeps (RDONLY/WRONLY belong to the fd, not the map)."""
        self.name = name
        self.frozen = False
        self.map_extra = map_extra
        self.numa_node = numa_node
        self.btf_id = 0
        self.btf_key_type_id = 0
        self.btf_value_type_id = 0
        self.btf_vmlinux_value_type_id = 0
        cpus = kernel.config.cpus
        self.percpu = map_type in PERCPU_MAP_TYPES
        """Values have one slot per possible CPU."""
        self.holds_fds = map_type in FD_MAP_TYPES
        """Values are fds on the syscall side (4 bytes in: an fd; out: an object id)."""
        self.slot_size = round_up(value_size, 8)
        """The per-CPU slot of a value (round_up(value_size, 8))."""
        self._syscall_value_size = (
            self.slot_size * cpus if self.percpu else 4 if self.holds_fds else value_size
        )
        self.init_storage()

    def init_storage(self) -> None:
        """Set up the type's element storage from the attributes above (override, calling
        super() first); runs once, at the end of construction."""

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def check_attr(cls, params: MapParams, kernel: Kernel) -> None:
        """The type's map_alloc_check: attr checks made before any privilege check."""

    @classmethod
    def check_alloc(cls, params: MapParams, kernel: Kernel) -> None:
        """What the type's map_alloc refuses (made after the privilege checks)."""

    @classmethod
    def create(cls, kernel: Kernel, params: MapParams) -> BpfMap:
        """The new map (all checks passed); it holds one reference, the caller's."""
        return cls(
            kernel,
            kernel.objects,
            params.map_type,
            params.key_size,
            params.value_size,
            params.max_entries,
            params.map_flags,
            params.name,
            numa_node=params.numa_node,
            map_extra=params.map_extra,
        )

    # -- element operations on raw bytes (syscall side) ------------------------------------------
    def lookup(self, key: bytes) -> bytes:
        """The value stored under `key` (ENOENT when absent)."""
        fail(ENOTSUPP, f"{self.map_type.name} has no lookup")

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        """Insert or replace per BPF_ANY / BPF_NOEXIST / BPF_EXIST."""
        fail(ENOTSUPP, f"{self.map_type.name} has no update")

    def update_via_fd(self, map_fd: int, key: bytes, value: bytes, flags: int) -> None:
        """The syscall update made through map fd `map_fd` (fd arrays remember the fd)."""
        self.update(key, value, flags)

    def delete(self, key: bytes) -> None:
        """Remove `key` (ENOENT when absent)."""
        fail(errno.EINVAL, f"{self.map_type.name} has no delete")

    def get_next_key(self, key: bytes | None) -> bytes:
        """The key after `key` (the first when None or absent); ENOENT at the end."""
        fail(ENOTSUPP, f"{self.map_type.name} has no get_next_key")

    def lookup_and_delete(self, key: bytes, flags: int) -> bytes:
        """Remove and return the value under `key` (queue/stack: pop)."""
        fail(ENOTSUPP, f"{self.map_type.name} has no lookup_and_delete")

    @property
    def syscall_value_size(self) -> int:
        """The value size seen through bpf(): per-CPU maps multiply the slot by the CPUs; fd maps
        take and give 4 bytes."""
        return self._syscall_value_size

    # -- program side -----------------------------------------------------------------------------
    def value_view(self, key: bytes, cpu: int) -> memoryview | None:
        """A writable view of the value under `key` (for per-CPU maps, CPU `cpu`'s slot), valid
        while the element lives; None when absent or for maps whose values programs cannot
        address (fd maps, queue/stack, bloom filter, ringbuf)."""
        return None

    def update_from_prog(self, key: bytes, value: bytes, flags: int, cpu: int) -> None:
        """bpf_map_update_elem from a program on `cpu`: the syscall update, except that per-CPU
        maps take one `value_size` value for `cpu` (a new element's other CPUs read zeros)."""
        self.update(key, value, flags)

    def delete_from_prog(self, key: bytes) -> None:
        """bpf_map_delete_elem from a program: the syscall delete."""
        self.delete(key)

    # -- the fd ----------------------------------------------------------------------------------
    def mmap(self, length: int, prot: int, flags: int, offset: int) -> Mapping:
        """mmap(2) of a map fd: ENOTSUPP for map types without map_mmap."""
        fail(ENOTSUPP, f"{self.map_type.name} cannot be mapped")

    @property
    def writable_mappings(self) -> int:
        """Writable mappings of the map still open: FREEZE is EBUSY while there are any."""
        return 0

    def memlock(self) -> int:
        """Bytes charged for the map, as fdinfo's memlock reports them."""
        profile = self.kernel.profile
        if profile.has_behaviour("map_mem_usage"):
            return self.mem_usage()
        size = round_up(self.key_size + self.syscall_value_size, 8)
        return round_up(self.max_entries * size, self.kernel.config.page_size)

    def mem_usage(self) -> int:
        """6.18's map_mem_usage() for this map (override per type)."""
        return 0

    def fdinfo(self) -> list[tuple[str, str]]:
        """The map's lines of /proc/self/fdinfo/<fd>, after pos/flags/mnt_id/ino."""
        lines = [
            ("map_type", str(int(self.map_type))),
            ("key_size", str(self.key_size)),
            ("value_size", str(self.value_size)),
            ("max_entries", str(self.max_entries)),
            ("map_flags", f"{self.map_flags:#x}"),
        ]
        if self.kernel.profile.has(MapType.BLOOM_FILTER):  # map_extra came with it (5.16)
            lines.append(("map_extra", f"{self.map_extra:#x}"))
        lines += [
            ("memlock", str(self.memlock())),
            ("map_id", str(self.id)),
            ("frozen", str(int(self.frozen))),
        ]
        return lines + self.owner_fdinfo()

    def owner_fdinfo(self) -> list[tuple[str, str]]:
        """Extra fdinfo lines (the owner program type of a prog array)."""
        return []

    def map_info(self) -> BpfMapInfo:
        """struct bpf_map_info for OBJ_GET_INFO_BY_FD."""
        return BpfMapInfo(
            type=int(self.map_type),
            id=self.id,
            key_size=self.key_size,
            value_size=self.value_size,
            max_entries=self.max_entries,
            map_flags=self.map_flags,
            name=self.name,
            btf_vmlinux_value_type_id=self.btf_vmlinux_value_type_id,
            btf_id=self.btf_id,
            btf_key_type_id=self.btf_key_type_id,
            btf_value_type_id=self.btf_value_type_id,
            map_extra=self.map_extra,
        )

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} id={self.id} {self.map_type.name} key={self.key_size} "
            f"value={self.value_size} max={self.max_entries}>"
        )


def check_size(nbytes: int, what: str) -> None:
    """ENOMEM when a map would need more than ALLOC_LIMIT bytes."""
    if nbytes > ALLOC_LIMIT:
        fail(errno.ENOMEM, f"{what} needs {nbytes} bytes")


def key_index(key: bytes) -> int:
    """The u32 index an array key holds."""
    return int.from_bytes(key, "little")


def index_after(key: bytes | None, max_entries: int) -> bytes:
    """GET_NEXT_KEY of an array-like map: index + 1; 0 for NULL or an index out of range;
    ENOENT after the last index."""
    index = 0xFFFFFFFF if key is None else key_index(key)
    if index >= max_entries:
        return bytes(4)
    if index == max_entries - 1:
        fail(errno.ENOENT, "last index")
    return (index + 1).to_bytes(4, "little")
