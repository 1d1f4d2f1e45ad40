"""SOCKMAP and SOCKHASH: sockets of this process, and the SK_SKB / SK_MSG programs they run.

Theory of operation
-------------------
Creation (sock_map_alloc / sock_hash_alloc, after the CAP_NET_ADMIN check): max_entries 0, a
key_size other than 4 (SOCKMAP) or 0 (SOCKHASH), value_size other than 4 or 8 (8 since 5.6), or
flags outside NUMA_NODE | RDONLY | WRONLY: EINVAL; SOCKHASH: key_size above MAX_BPF_STACK (512):
E2BIG, more than 2^28 buckets (roundup_pow_of_two(max_entries), 0 past 2^31): EINVAL.

A value is a socket fd of this process (`host_files.socket_facts`). Update, check by check
(sock_map_update_elem_sys, then the map's update_common):

1. the fd (a u64 with value_size 8) above S32_MAX: EINVAL; not open: EBADF; not a socket: ENOTSOCK;
2. a socket the kernel cannot put in a sock map: EOPNOTSUPP. Allowed: TCP established or
   listening, UDP once bound (hashed), connected unix stream, any unix datagram socket; not
   unconnected TCP, unbound UDP, unix seqpacket, raw, AF_XDP (vsock is not modelled);
3. flags above BPF_EXIST: EINVAL; SOCKMAP: index >= max_entries: E2BIG;
4. linking the socket's psock (sock_map_link): when the socket already has a psock (it is in a
   sock map) that runs a program of a kind this map would add, EBUSY (a stream or skb verdict
   excludes both verdicts); otherwise the psock takes each program of the map; then, unless a
   verdict already runs, a stream parser with a stream verdict starts (a non-TCP socket:
   EOPNOTSUPP) or a verdict alone starts;
5. BPF_NOEXIST on a stored key: EEXIST; BPF_EXIST on an absent one: ENOENT; SOCKHASH: a new
   key when max_entries are stored: E2BIG.

The psock lives on the `HostSocket` while the socket is in any sock map. When the socket leaves a
map while a verdict runs, the map's kinds of programs stop: a stream parser is dropped if the map
has one, both verdicts if it has either (sock_map_del_link); a msg parser, or a parser that never
ran, stays until the socket leaves its last sock map.

Lookup from user space gives the socket cookie when value_size is 8 (ENOSPC otherwise, before
the key is looked at; ENOENT when absent). Delete: SOCKMAP EINVAL for an empty or out-of-range
index, SOCKHASH ENOENT when absent. GET_NEXT_KEY: SOCKMAP walks indexes as an array does,
SOCKHASH goes in insertion order (the kernel's hash order is random).
memlock: SOCKMAP sizeof(bpf_stab) + 8 per index; SOCKHASH sizeof(bpf_shtab) + 16 per bucket +
(48 + round_up(key_size, 8)) per element.

Programs (PROG_ATTACH / PROG_DETACH / PROG_QUERY, `SockMapBase.programs`): one program per attach
point; the stream verdict and the skb verdict exclude each other (EBUSY, for a query too); an
attach replaces the program there; a detach must name the attached program (ENOENT).
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Final

from bpfsys.abi import AttachType, MapFlag, MapType, UpdateFlag
from kernelsim.errors import fail
from kernelsim.kernel import Kernel
from kernelsim.maps.base import (
    BpfMap,
    MapParams,
    check_size,
    index_after,
    key_index,
    round_up,
    roundup_pow_of_two,
)
from kernelsim.maps.host_files import (
    TCP_ESTABLISHED,
    TCP_LISTEN,
    HostSocket,
    HostSockets,
    SocketFacts,
    socket_facts,
)
from kernelsim.maps.slots import SlotTable
from kernelsim.prog.program import BpfProgram

S32_MAX: Final = 0x7FFFFFFF
MAX_BPF_STACK: Final = 512
STAB_SIZE: Final = 376
"""sizeof(struct bpf_stab), measured through fdinfo memlock on 6.18 x86_64."""
SHTAB_SIZE: Final = 384
"""sizeof(struct bpf_shtab)."""
SHTAB_BUCKET_SIZE: Final = 16
SHTAB_ELEM_SIZE: Final = 48
"""sizeof(struct bpf_shtab_elem) before the key."""
CREATE_FLAGS: Final = MapFlag.NUMA_NODE | MapFlag.RDONLY | MapFlag.WRONLY
ATTACH_SLOTS: Final[dict[int, str]] = {
    AttachType.SK_MSG_VERDICT: "msg_parser",
    AttachType.SK_SKB_STREAM_PARSER: "stream_parser",
    AttachType.SK_SKB_STREAM_VERDICT: "stream_verdict",
    AttachType.SK_SKB_VERDICT: "skb_verdict",
}
"""The attach types of sock map programs and the psock slot each fills."""
EXCLUDES: Final = {"stream_verdict": "skb_verdict", "skb_verdict": "stream_verdict"}
VERDICTS: Final = frozenset({"stream_verdict", "skb_verdict"})


def sock_map_suitable(facts: SocketFacts) -> bool:
    """sock_map_sk_is_suitable and sock_map_sk_state_allowed."""
    inet = facts.family in (socket.AF_INET, socket.AF_INET6)
    if inet and facts.type == socket.SOCK_STREAM and facts.protocol == socket.IPPROTO_TCP:
        return facts.tcp_state in (TCP_ESTABLISHED, TCP_LISTEN)
    if inet and facts.type == socket.SOCK_DGRAM and facts.protocol == socket.IPPROTO_UDP:
        return facts.bound
    if facts.family == socket.AF_UNIX:
        return facts.type == socket.SOCK_DGRAM or (
            facts.type == socket.SOCK_STREAM and facts.connected
        )
    return False


class SockMapBase(BpfMap):
    """What SOCKMAP and SOCKHASH share: checking the socket, the psock, the programs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.programs: dict[str, BpfProgram] = {}
        """The attached programs by psock slot (ATTACH_SLOTS)."""

    @classmethod
    def check_value_size(cls, params: MapParams, kernel: Kernel) -> bool:
        sizes = (4, 8) if kernel.profile.has_behaviour("sockmap_cookie") else (4,)
        return params.value_size in sizes and not params.map_flags & ~int(CREATE_FLAGS)

    # -- the value: a socket --------------------------------------------------------------------
    def socket_for(self, value: bytes) -> HostSocket:
        """The socket `value` names, with a reference for the caller (steps 1-2)."""
        fd = int.from_bytes(value, "little")
        if fd > S32_MAX:
            fail(errno.EINVAL, f"fd {fd} above S32_MAX")
        facts = socket_facts(fd)
        if not sock_map_suitable(facts):
            fail(errno.EOPNOTSUPP, f"fd {fd}: this socket cannot be put in a sock map")
        return self.kernel.subsystem(HostSockets).get(facts)

    def link(self, sock: HostSocket) -> None:
        """sock_map_link (step 4): the psock takes the map's programs (and keeps them even when
        the update fails later, as long as the socket is in another sock map)."""
        mine = self.programs
        theirs = sock.psock
        for slot in mine:
            if slot in theirs or (slot in VERDICTS and EXCLUDES[slot] in theirs):
                fail(errno.EBUSY, f"the socket's psock already runs a {slot} program")
        for slot, prog in mine.items():
            sock.set_program(slot, prog)
        if sock.verdict_running or not mine.keys() & VERDICTS:
            return
        if "stream_parser" in mine and "stream_verdict" in mine and not sock.is_tcp:
            fail(errno.EOPNOTSUPP, "a stream parser needs a TCP socket")
        sock.verdict_running = True

    def unlink(self, sock: HostSocket) -> None:
        """sock_map_unref: the socket leaves this map; a running parser or verdict of the kind
        this map has is stopped (the psock's programs of that kind are dropped)."""
        if sock.verdict_running:
            stop_parser = "stream_parser" in self.programs
            stop_verdict = bool(self.programs.keys() & VERDICTS)
            if stop_parser:
                sock.clear_programs("stream_parser")
            if stop_verdict:
                sock.clear_programs(*VERDICTS)
            if stop_parser or stop_verdict:
                sock.verdict_running = False
        sock.put()

    def cookie_of(self, sock: HostSocket | None) -> bytes:
        if self.value_size != 8:
            fail(errno.ENOSPC, "sock map lookups need an 8-byte value (the socket cookie)")
        if sock is None:
            fail(errno.ENOENT, "no socket under this key")
        return sock.facts.cookie.to_bytes(8, "little")

    # -- programs -----------------------------------------------------------------------------
    def program_slot(self, attach_type: int) -> str:
        """sock_map_prog_link_lookup: the slot of `attach_type` (EBUSY when the other verdict
        kind is attached)."""
        slot = ATTACH_SLOTS.get(attach_type)
        if slot is None:
            fail(errno.EOPNOTSUPP, f"attach type {attach_type} is not a sock map program")
        if slot in VERDICTS and EXCLUDES[slot] in self.programs:
            fail(errno.EBUSY, f"a {EXCLUDES[slot]} program is attached")
        return slot

    def attach(self, prog: BpfProgram, attach_type: int) -> None:
        """PROG_ATTACH: `prog` replaces the program at `attach_type`."""
        slot = self.program_slot(attach_type)
        prog.hold()
        old = self.programs.get(slot)
        self.programs[slot] = prog
        if old is not None:
            old.put()

    def detach(self, prog: BpfProgram, attach_type: int) -> None:
        """PROG_DETACH: remove `prog` from `attach_type` (ENOENT unless it is the one there)."""
        slot = self.program_slot(attach_type)
        if self.programs.get(slot) is not prog:
            fail(errno.ENOENT, "that program is not attached here")
        del self.programs[slot]
        prog.put()

    def attached(self, attach_type: int) -> BpfProgram | None:
        """PROG_QUERY: the program at `attach_type`."""
        return self.programs.get(self.program_slot(attach_type))

    def release(self) -> None:
        for prog in self.programs.values():
            prog.put()
        self.programs = {}


class SockMap(SockMapBase):
    """SOCKMAP: sockets by index."""

    map_types = (MapType.SOCKMAP,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.socks: dict[int, HostSocket] = {}

    @classmethod
    def check_alloc(cls, params: MapParams, kernel: Kernel) -> None:
        if (
            not params.max_entries
            or params.key_size != 4
            or not cls.check_value_size(params, kernel)
        ):
            fail(errno.EINVAL, "bad attributes for SOCKMAP")
        check_size(8 * params.max_entries, "socket table")

    def lookup(self, key: bytes) -> bytes:
        return self.cookie_of(self.socks.get(key_index(key)))

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        sock = self.socket_for(value)
        try:
            index = key_index(key)
            if flags > UpdateFlag.EXIST:
                fail(errno.EINVAL, f"unknown update flags {flags:#x}")
            if index >= self.max_entries:
                fail(errno.E2BIG, f"index {index} out of range")
            self.link(sock)
            old = self.socks.get(index)
            if old is not None and flags == UpdateFlag.NOEXIST:
                fail(errno.EEXIST, "index in use (BPF_NOEXIST)")
            if old is None and flags == UpdateFlag.EXIST:
                fail(errno.ENOENT, "empty index (BPF_EXIST)")
        except OSError:
            sock.put()
            raise
        self.socks[index] = sock
        if old is not None:
            self.unlink(old)

    def delete(self, key: bytes) -> None:
        old = self.socks.pop(key_index(key), None)
        if old is None:
            fail(errno.EINVAL, "no socket at this index")
        self.unlink(old)

    def get_next_key(self, key: bytes | None) -> bytes:
        return index_after(key, self.max_entries)

    def mem_usage(self) -> int:
        return STAB_SIZE + 8 * self.max_entries

    def release(self) -> None:
        for sock in self.socks.values():
            self.unlink(sock)
        self.socks = {}
        super().release()


class SockHash(SockMapBase):
    """SOCKHASH: sockets by a key of any size."""

    map_types = (MapType.SOCKHASH,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table = SlotTable()
        self.socks: list[HostSocket | None] = []
        """The socket of each slot of `table`."""
        self.n_buckets = roundup_pow_of_two(self.max_entries)

    @classmethod
    def check_alloc(cls, params: MapParams, kernel: Kernel) -> None:
        if (
            not params.max_entries
            or not params.key_size
            or not cls.check_value_size(params, kernel)
        ):
            fail(errno.EINVAL, "bad attributes for SOCKHASH")
        if params.key_size > MAX_BPF_STACK:
            fail(errno.E2BIG, f"key_size above {MAX_BPF_STACK}")
        buckets = roundup_pow_of_two(params.max_entries)
        if buckets > 0xFFFFFFFF // SHTAB_BUCKET_SIZE:
            fail(errno.EINVAL, f"{buckets} buckets")

    def _sock(self, key: bytes) -> HostSocket | None:
        slot = self.table.index.get(key)
        return None if slot is None else self.socks[slot]

    def lookup(self, key: bytes) -> bytes:
        return self.cookie_of(self._sock(key) if self.value_size == 8 else None)

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        sock = self.socket_for(value)
        table = self.table
        slot = table.index.get(key)
        try:
            if flags > UpdateFlag.EXIST:
                fail(errno.EINVAL, f"unknown update flags {flags:#x}")
            self.link(sock)
            if slot is not None and flags == UpdateFlag.NOEXIST:
                fail(errno.EEXIST, "key exists (BPF_NOEXIST)")
            if slot is None and flags == UpdateFlag.EXIST:
                fail(errno.ENOENT, "no such key (BPF_EXIST)")
            if slot is None and len(table) >= self.max_entries:
                fail(errno.E2BIG, f"map full ({self.max_entries} entries)")
        except OSError:
            sock.put()
            raise
        if slot is None:
            slot = table.add(key)
            self.socks.extend([None] * (slot + 1 - len(self.socks)))
        old, self.socks[slot] = self.socks[slot], sock
        if old is not None:
            self.unlink(old)

    def delete(self, key: bytes) -> None:
        slot = self.table.remove(key)
        if slot is None:
            fail(errno.ENOENT, "no such key")
        old, self.socks[slot] = self.socks[slot], None
        if old is not None:
            self.unlink(old)

    def get_next_key(self, key: bytes | None) -> bytes:
        found = self.table.key_after(key)
        if found is None:
            fail(errno.ENOENT, "no key after the given one")
        return found

    def mem_usage(self) -> int:
        elem = SHTAB_ELEM_SIZE + round_up(self.key_size, 8)
        return SHTAB_SIZE + SHTAB_BUCKET_SIZE * self.n_buckets + elem * len(self.table)

    def release(self) -> None:
        for sock in self.socks:
            if sock is not None:
                self.unlink(sock)
        self.socks = []
        super().release()
