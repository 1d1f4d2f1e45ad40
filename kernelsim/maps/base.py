"""`BpfMap`: the kernel object behind a map fd, and the operations every map type provides.

Theory of operation
-------------------
A map is created from a validated `MapCreateAttr` and then only changes through its operations,
all on raw bytes (keys and values exactly `key_size` / `value_size` bytes; per-CPU maps take
and give `round_up(value_size, 8) * possible_cpus` bytes through the syscall side). Each
operation either returns its result or raises the kernel's errno through `fail`. Operations a
map type lacks raise what the kernel gives for a missing `bpf_map_ops` member (ENOTSUPP, or
EINVAL where the syscall checks first). The semantics are sans-IO: no fds, no user memory; the
bpf() command handlers translate between the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from bpfsys.abi import MapType
from kernelsim.errors import ENOTSUPP, fail
from kernelsim.objects import KernelObject, ObjectRegistry

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel


class BpfMap(KernelObject):
    """A bpf map. Subclasses implement the operations their type has."""

    id_space = "map"
    anon_name = "bpf-map"
    map_types: ClassVar[tuple[MapType, ...]] = ()
    """The map types this class implements."""

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
    ) -> None:
        super().__init__(registry)
        self.kernel = kernel
        self.map_type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.map_flags = map_flags
        self.name = name
        self.frozen = False
        self.map_extra = 0

    # Element operations on raw bytes. The defaults are the kernel's answer for a map type
    # without that operation.
    def lookup(self, key: bytes, flags: int = 0) -> bytes:
        """The value for `key` (ENOENT when absent)."""
        fail(ENOTSUPP, f"{self.map_type.name} has no lookup")

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        """Insert or replace per BPF_ANY / BPF_NOEXIST / BPF_EXIST (and BPF_F_LOCK)."""
        fail(ENOTSUPP, f"{self.map_type.name} has no update")

    def delete(self, key: bytes) -> None:
        """Remove `key` (ENOENT when absent)."""
        fail(ENOTSUPP, f"{self.map_type.name} has no delete")

    def get_next_key(self, key: bytes | None) -> bytes:
        """The key after `key` (the first when None or absent); ENOENT at the end."""
        fail(ENOTSUPP, f"{self.map_type.name} has no get_next_key")

    def lookup_and_delete(self, key: bytes | None, flags: int = 0) -> bytes:
        """Remove and return (queue/stack pop when the map has no keys)."""
        fail(ENOTSUPP, f"{self.map_type.name} has no lookup_and_delete")

    @property
    def syscall_value_size(self) -> int:
        """The value size seen through bpf(): per-CPU maps multiply it by the CPUs."""
        return self.value_size

    def memlock(self) -> int:
        """Bytes charged for the map, as fdinfo's memlock reports them."""
        return 0

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} id={self.id} {self.map_type.name} key={self.key_size} "
            f"value={self.value_size} max={self.max_entries}>"
        )
