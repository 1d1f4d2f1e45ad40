"""Maps of maps: the inner map template and the rules for what may be stored.

Theory of operation
-------------------
ARRAY_OF_MAPS and HASH_OF_MAPS are created with `inner_map_fd`, a map whose shape becomes the
template (`bpf_map_meta_alloc`): an fd that is not open is EBADF, not a map EINVAL; a map of maps
cannot be the template (EINVAL, one level only); a prog array cannot (ENOTSUPP: it has no
map_meta_equal). An update stores a map whose type, key size, value size and flags equal the
template's (and, for a BPF_MAP_TYPE_ARRAY template without BPF_F_INNER_MAP, its max_entries);
anything else is EINVAL. The outer map holds a reference on each stored map; the syscall side
reads back the stored map's id.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import attrs

from bpfsys.abi import MapFlag, MapType
from kernelsim.errors import ENOTSUPP, fail
from kernelsim.maps.base import BpfMap, MapParams

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

OUTER_TYPES = (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS)
NOT_INNER_TYPES = (MapType.PROG_ARRAY,)
"""Types without map_meta_equal: ENOTSUPP as a template."""


@attrs.frozen
class InnerMapTemplate:
    """The shape every map stored in a map of maps must have."""

    map_type: MapType
    key_size: int
    value_size: int
    map_flags: int
    max_entries: int

    @classmethod
    def from_fd(cls, kernel: Kernel, fd: int) -> InnerMapTemplate:
        """bpf_map_meta_alloc(inner_map_fd)."""
        inner = map_of_fd(kernel, fd)
        if inner.map_type in OUTER_TYPES:
            fail(errno.EINVAL, "a map of maps cannot be the inner map template")
        if inner.map_type in NOT_INNER_TYPES:
            fail(ENOTSUPP, f"a {inner.map_type.name} cannot be an inner map")
        return cls(
            inner.map_type, inner.key_size, inner.value_size, inner.map_flags, inner.max_entries
        )

    def admit(self, kernel: Kernel, fd: int) -> BpfMap:
        """The map behind `fd` when it fits the template (bpf_map_fd_get_ptr), with a new
        reference for the outer map."""
        inner = map_of_fd(kernel, fd)
        same = (
            inner.map_type == self.map_type
            and inner.key_size == self.key_size
            and inner.value_size == self.value_size
            and inner.map_flags == self.map_flags
        )
        if same and self.map_type == MapType.ARRAY and not self.map_flags & MapFlag.INNER_MAP:
            same = inner.max_entries == self.max_entries
        if not same:
            fail(errno.EINVAL, f"{inner!r} does not fit the inner map template {self}")
        inner.hold()
        return inner


def map_of_fd(kernel: Kernel, fd: int) -> BpfMap:
    """__bpf_map_get: EBADF for no such fd, EINVAL for an fd that is not a map."""
    return kernel.fds.get(fd, BpfMap)


class MapOfMaps(BpfMap):
    """What ARRAY_OF_MAPS and HASH_OF_MAPS share: the inner map template, checked before the
    allocation and kept on the map. Listed first among a map class's bases."""

    template: InnerMapTemplate

    @classmethod
    def check_alloc(cls, params: MapParams, kernel: Kernel) -> None:
        InnerMapTemplate.from_fd(kernel, params.inner_map_fd)
        super().check_alloc(params, kernel)

    @classmethod
    def create(cls, kernel: Kernel, params: MapParams) -> BpfMap:
        bpf_map = super().create(kernel, params)
        assert isinstance(bpf_map, MapOfMaps)
        bpf_map.template = InnerMapTemplate.from_fd(kernel, params.inner_map_fd)
        return bpf_map
