"""LPM_TRIE maps: longest prefix match over (prefixlen, data) keys.

Theory of operation
-------------------
A key is a u32 prefix length followed by `key_size - 4` data bytes (big-endian bit order: bit 0
is the top bit of data[0]); max_prefixlen is 8 * (key_size - 4). Creation (trie_alloc, after the
privilege checks): max_entries 0, no BPF_F_NO_PREALLOC, flags outside NO_PREALLOC | NUMA_NODE |
the access flags, RDONLY_PROG with WRONLY_PROG, key_size outside 5..260 or value_size outside
1..(KMALLOC_MAX_SIZE - 256 - sizeof(node)): EINVAL.

The trie is the kernel's: each node holds a prefix; child[bit] continues with the next bit after
the node's prefix; intermediate nodes (no value) join two subtrees and disappear with them.

| command      | behaviour                                                                     |
|--------------|-------------------------------------------------------------------------------|
| lookup       | longest stored prefix matching the key's first prefixlen bits; a prefixlen    |
|              | above max_prefixlen or no match: ENOENT                                       |
| update       | flags above BPF_EXIST or prefixlen above max: EINVAL; a new entry on a full   |
|              | trie: ENOSPC; BPF_NOEXIST on a stored key: EEXIST; BPF_EXIST on a missing     |
|              | one: ENOENT                                                                   |
| delete       | exact (prefixlen, data) only: ENOENT otherwise; prefixlen above max: EINVAL   |
| get_next_key | postorder (more specific prefixes first); a missing key restarts at the       |
|              | leftmost node                                                                  |
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final

from bpfsys.abi import BpfCmd, MapFlag, MapType, UpdateFlag
from kernelsim.errors import fail
from kernelsim.maps.base import (
    ACCESS_MASK,
    KMALLOC_MAX_SIZE,
    BpfMap,
    MapParams,
    disallowed_flags,
    flags_access_ok,
)

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

NODE_SIZE: Final = 24
"""sizeof(struct lpm_trie_node), measured through fdinfo memlock on 6.18 x86_64."""
DATA_SIZE_MAX: Final = 256
CREATE_FLAGS: Final = MapFlag.NO_PREALLOC | MapFlag.NUMA_NODE | ACCESS_MASK
BATCH: Final = frozenset(
    {BpfCmd.MAP_LOOKUP_BATCH, BpfCmd.MAP_UPDATE_BATCH, BpfCmd.MAP_DELETE_BATCH}
)


class Node:
    """A trie node; `value` None marks an intermediate node."""

    __slots__ = ("child", "data", "prefixlen", "value")

    def __init__(self, prefixlen: int, data: bytes, value: bytearray | None) -> None:
        self.prefixlen = prefixlen
        self.data = data
        self.value = value
        self.child: list[Node | None] = [None, None]


def extract_bit(data: bytes, index: int) -> int:
    return data[index // 8] >> (7 - index % 8) & 1


def common_prefix(a: bytes, b: bytes, limit: int) -> int:
    """How many leading bits of `a` and `b` agree, at most `limit`."""
    diff = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    same = len(a) * 8 - diff.bit_length()
    return min(same, limit)


class LpmTrieMap(BpfMap):
    """LPM_TRIE: the kernel's prefix trie."""

    map_types = (MapType.LPM_TRIE,)
    batch_commands = BATCH

    def init_storage(self) -> None:
        super().init_storage()
        self.data_size = self.key_size - 4
        self.max_prefixlen = self.data_size * 8
        self.root: Node | None = None
        self.entries = 0

    @classmethod
    def check_alloc(cls, params: MapParams, kernel: Kernel) -> None:
        flags = params.map_flags
        if (
            not params.max_entries
            or not flags & MapFlag.NO_PREALLOC
            or disallowed_flags(flags, CREATE_FLAGS, kernel)
            or not flags_access_ok(flags)
            or not 4 + 1 <= params.key_size <= 4 + DATA_SIZE_MAX
            or not 1 <= params.value_size <= KMALLOC_MAX_SIZE - DATA_SIZE_MAX - NODE_SIZE
        ):
            fail(errno.EINVAL, "bad attributes for LPM_TRIE")

    @staticmethod
    def split(key: bytes) -> tuple[int, bytes]:
        return int.from_bytes(key[:4], "little"), key[4:]

    def _match(self, node: Node, prefixlen: int, data: bytes) -> int:
        return common_prefix(node.data, data, min(node.prefixlen, prefixlen))

    def _find_value(self, key: bytes) -> bytearray | None:
        """trie_lookup_elem: the value of the longest matching prefix."""
        prefixlen, data = self.split(key)
        if prefixlen > self.max_prefixlen:
            return None
        found: bytearray | None = None
        node = self.root
        while node is not None:
            matchlen = self._match(node, prefixlen, data)
            if matchlen == self.max_prefixlen:
                return node.value if node.value is not None else found
            if matchlen < node.prefixlen:
                break
            if node.value is not None:
                found = node.value
            node = node.child[extract_bit(data, node.prefixlen)]
        return found

    def lookup(self, key: bytes) -> bytes:
        value = self._find_value(key)
        if value is None:
            fail(errno.ENOENT, "no matching prefix")
        return bytes(value)

    def value_view(self, key: bytes, cpu: int) -> memoryview | None:
        value = self._find_value(key)
        return None if value is None else memoryview(value)

    def _add_entry(self, flags: int) -> None:
        """trie_check_add_elem."""
        if flags == UpdateFlag.EXIST:
            fail(errno.ENOENT, "no such prefix (BPF_EXIST)")
        if self.entries == self.max_entries:
            fail(errno.ENOSPC, f"trie full ({self.max_entries} entries)")
        self.entries += 1

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        if flags > UpdateFlag.EXIST:
            fail(errno.EINVAL, f"unknown update flags {flags:#x}")
        prefixlen, data = self.split(key)
        if prefixlen > self.max_prefixlen:
            fail(errno.EINVAL, f"prefixlen {prefixlen} above {self.max_prefixlen}")
        new = Node(prefixlen, data, bytearray(value))
        parent: Node | None = None
        side = 0
        node = self.root
        matchlen = 0
        while node is not None:
            matchlen = self._match(node, prefixlen, data)
            if node.prefixlen != matchlen or node.prefixlen == prefixlen:
                break
            parent, side = node, extract_bit(data, node.prefixlen)
            node = node.child[side]
        if node is None:
            self._add_entry(flags)
            self._attach(parent, side, new)
            return
        if node.prefixlen == matchlen:  # the same prefix: replace the node
            if node.value is not None:
                if flags == UpdateFlag.NOEXIST:
                    fail(errno.EEXIST, "prefix exists (BPF_NOEXIST)")
            else:
                self._add_entry(flags)
            new.child = node.child
            self._attach(parent, side, new)
            return
        self._add_entry(flags)
        if matchlen == prefixlen:  # the new prefix covers the node: insert it above
            new.child[extract_bit(node.data, matchlen)] = node
            self._attach(parent, side, new)
            return
        joint = Node(matchlen, node.data, None)
        bit = extract_bit(data, matchlen)
        joint.child[bit] = new
        joint.child[1 - bit] = node
        self._attach(parent, side, joint)

    def _attach(self, parent: Node | None, side: int, node: Node | None) -> None:
        if parent is None:
            self.root = node
        else:
            parent.child[side] = node

    def delete(self, key: bytes) -> None:
        prefixlen, data = self.split(key)
        if prefixlen > self.max_prefixlen:
            fail(errno.EINVAL, f"prefixlen {prefixlen} above {self.max_prefixlen}")
        grandparent: Node | None = None
        parent: Node | None = None
        gside = side = 0
        node = self.root
        matchlen = 0
        while node is not None:
            matchlen = self._match(node, prefixlen, data)
            if node.prefixlen != matchlen or node.prefixlen == prefixlen:
                break
            grandparent, gside = parent, side
            parent, side = node, extract_bit(data, node.prefixlen)
            node = node.child[side]
        if (
            node is None
            or node.prefixlen != prefixlen
            or node.prefixlen != matchlen
            or node.value is None
        ):
            fail(errno.ENOENT, "no such prefix")
        self.entries -= 1
        if node.child[0] is not None and node.child[1] is not None:
            node.value = None  # keep it as an intermediate node
            return
        if parent is not None and parent.value is None and node.child == [None, None]:
            self._attach(grandparent, gside, parent.child[1 - side])
            return
        self._attach(parent, side, node.child[0] or node.child[1])

    def get_next_key(self, key: bytes | None) -> bytes:
        """trie_get_next_key: the postorder successor of the stored node equal to the key,
        else (no such node, or an absent or too long key) the leftmost node."""
        root = self.root
        if root is None:
            fail(errno.ENOENT, "empty trie")
        if key is not None:
            prefixlen, data = self.split(key)
            if prefixlen <= self.max_prefixlen:
                stack = self._walk(prefixlen, data)
                node = stack[-1] if stack else None
                if (
                    node is not None
                    and node.value is not None
                    and self._match(node, prefixlen, data) == node.prefixlen
                ):
                    return self._key_of(self._successor(stack))
        return self._key_of(self._leftmost(root))

    def _walk(self, prefixlen: int, data: bytes) -> list[Node]:
        """The nodes the kernel's search for (prefixlen, data) visits, ending with the node it
        stops at; empty when it falls off the trie."""
        stack: list[Node] = []
        node = self.root
        while node is not None:
            stack.append(node)
            matchlen = self._match(node, prefixlen, data)
            if node.prefixlen != matchlen or node.prefixlen == prefixlen:
                return stack
            node = node.child[extract_bit(data, node.prefixlen)]
        return []

    def _successor(self, stack: list[Node]) -> Node:
        """The postorder successor of stack[-1]; ENOENT after the last node."""
        node = stack[-1]
        for parent in reversed(stack[:-1]):
            if parent.child[0] is node and parent.child[1] is not None:
                return self._leftmost(parent.child[1])
            if parent.value is not None:
                return parent
            node = parent
        fail(errno.ENOENT, "last key")

    @staticmethod
    def _leftmost(root: Node | None) -> Node:
        """The first non-intermediate node in postorder below `root`."""
        found: Node | None = None
        node = root
        while node is not None:
            if node.value is None:
                node = node.child[0]
            else:
                found = node
                node = node.child[0] if node.child[0] is not None else node.child[1]
        assert found is not None
        return found

    def _key_of(self, node: Node) -> bytes:
        return node.prefixlen.to_bytes(4, "little") + node.data

    def mem_usage(self) -> int:
        return (NODE_SIZE + self.data_size + self.value_size) * self.entries
