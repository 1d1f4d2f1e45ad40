"""BTF objects: BTF_LOAD with a minimal BTF checker, `Btf` with its info and fdinfo.

Theory of operation
-------------------
BTF_LOAD (btf_parse in kernel/bpf/btf.c) runs, in order:

1. CHECK_ATTR (dispatch); btf_flags beyond BPF_F_TOKEN_FD: EINVAL (no tokens are modelled: a
   token fd is EBADF or EINVAL); no CAP_BPF (CAP_SYS_ADMIN before 5.8): EPERM;
2. btf_size above 16 MiB: E2BIG; the log attributes (`VerifierLog.check_attr`): EINVAL;
3. the blob is copied in (EFAULT); the header is checked (below), then the string section,
   then each type record ("check meta"), then the types that refer to others ("resolve");
4. the log is finalized: a log that did not fit turns any result into ENOSPC; log_true_size is
   written back when the caller's attr reaches it (6.4 and later).

| check                                           | errno    | log line                         |
|-------------------------------------------------|----------|----------------------------------|
| fewer than 8 bytes                              | EINVAL   | hdr_len not found                |
| fewer than hdr_len bytes                        | EINVAL   | btf_header not found             |
| header bytes beyond the known 24 not zero       | E2BIG    | Unsupported btf_header           |
| magic != 0xeB9F                                 | EINVAL   | Invalid magic                    |
| version != 1 / flags != 0                       | ENOTSUPP | Unsupported version / flags      |
| nothing after the header                        | EINVAL   | No data                          |
| sections with gaps, overlaps, past the end      | EINVAL   | Unsupported section found, ...   |
| string section empty, or not starting and ending| EINVAL   | Invalid string section           |
| with a NUL                                      |          |                                  |
| type_off not 4-aligned / no types               | EINVAL   | Unaligned type_off / No type found|
| a record cut short, bad kind, bad name offset,  | EINVAL   | [id] ... (the record, the reason)|
| kind-specific field rules                       |          |                                  |
| a member or target type that does not resolve   | EINVAL   | [id] ... Invalid member, ...     |

Kinds modelled: INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT.
Every other kind (FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64) is refused
with EINVAL and a log line saying so (a divergence, docs/fidelity/objects.md).

A loaded `Btf` has an id in the "btf" id space, a name ("" for loaded BTF), and its raw data.
Its fd is O_RDONLY; OBJ_GET_INFO_BY_FD copies out min(btf_size, data size) bytes of data and the
name with the two-call convention (name and name_len together or neither: EINVAL; a name
buffer too short: the info is still copied back, then ENOSPC).
"""

from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING, Final

import attrs

from bpfsys.abi import BpfBtfInfo, BpfCmd, BtfLoadAttr, MapFlag
from bpfsys.kversion import since
from kernelsim.dispatch import BpfCall, bpf_command
from kernelsim.errors import ENOTSUPP, fail
from kernelsim.objects import KernelObject
from kernelsim.prog.verifier.errors import VerifierError
from kernelsim.prog.verifier.log import VerifierLog

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

BTF_MAGIC: Final = 0xEB9F
BTF_VERSION: Final = 1
BTF_MAX_SIZE: Final = 16 * 1024 * 1024
HEADER: Final = struct.Struct("<HBBIIIII")
"""struct btf_header: magic, version, flags, hdr_len, type_off, type_len, str_off, str_len."""
MIN_HEADER: Final = 8
TYPE_HEADER: Final = struct.Struct("<III")
"""struct btf_type: name_off, info, size/type."""
MEMBER: Final = struct.Struct("<III")
ARRAY: Final = struct.Struct("<III")
ENUM_VALUE: Final = struct.Struct("<Ii")
MAX_TYPE_ID: Final = 0x7FFFFFFF
MAX_NAME_OFFSET: Final = 0xFFFFFF
PTR_SIZE: Final = 8
KSYM_NAME_LEN: Final = 512

KIND_NAMES: Final = (
    "UNKN",
    "INT",
    "PTR",
    "ARRAY",
    "STRUCT",
    "UNION",
    "ENUM",
    "FWD",
    "TYPEDEF",
    "VOLATILE",
    "CONST",
    "RESTRICT",
    "FUNC",
    "FUNC_PROTO",
    "VAR",
    "DATASEC",
    "FLOAT",
    "DECL_TAG",
    "TYPE_TAG",
    "ENUM64",
)
INT, PTR, ARRAY_KIND, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
REF_KINDS: Final = frozenset({PTR, TYPEDEF, VOLATILE, CONST, RESTRICT})
KIND_SINCE: Final = ((19, "6.0"), (18, "5.16"), (16, "5.13"), (14, "5.2"), (12, "5.0"))
"""BTF_KIND_MAX by version: (highest kind, kernel that added it)."""
INT_ENCODINGS: Final = {0: "(none)", 1: "SIGNED", 2: "CHAR", 4: "BOOL"}
INT_MASK: Final = 0x0F00FFFF


class BtfRejected(Exception):
    """The blob is refused with `errno` (the reason is already in the log)."""

    def __init__(self, err: int) -> None:
        super().__init__(err)
        self.errno = err


@attrs.frozen
class BtfType:
    """One type record: its header fields and the records after it (members, enum values)."""

    type_id: int
    kind: int
    name_off: int
    vlen: int
    kflag: bool
    size_or_type: int
    extra: tuple[tuple[int, int, int], ...] = ()
    """Members (name_off, type, offset), array (type, index_type, nelems) or enum values."""


class BtfChecker:
    """btf_parse over a blob, logging as the kernel does (sans-IO: bytes and a log in)."""

    def __init__(self, data: bytes, log: VerifierLog, max_kind: int) -> None:
        self.data = data
        self.log = log
        self.max_kind = max_kind
        self.strings = b""
        self.types: list[BtfType] = []
        self.sizes: dict[int, int | None] = {}
        self._resolving: set[int] = set()

    # -- logging ------------------------------------------------------------------------------
    def reject(self, err: int, line: str = "") -> BtfRejected:
        self.log.write(line)
        return BtfRejected(err)

    def name(self, offset: int) -> str:
        if offset == 0:
            return "(anon)"
        if offset >= len(self.strings):
            return "(invalid-name-offset)"
        end = self.strings.index(b"\0", offset)
        return self.strings[offset:end].decode(errors="replace")

    def type_line(self, t: BtfType, details: bool = True, why: str = "") -> str:
        text = f"[{t.type_id}] {KIND_NAMES[t.kind]} {self.name(t.name_off)}"
        if details:
            text += " " + self.details(t)
        if why:
            text += " " + why
        return text + "\n"

    def member_line(self, t: BtfType, member: tuple[int, int, int], why: str = "") -> str:
        name_off, type_id, offset = member
        if t.kflag:
            text = (
                f"\t{self.name(name_off)} type_id={type_id} bitfield_size={offset >> 24} "
                f"bits_offset={offset & 0xFFFFFF}"
            )
        else:
            text = f"\t{self.name(name_off)} type_id={type_id} bits_offset={offset}"
        return text + (f" {why}" if why else "") + "\n"

    def details(self, t: BtfType) -> str:
        if t.kind == INT:
            data = t.extra[0][0]
            encoding = INT_ENCODINGS.get(data >> 24 & 0xF, "UNKN")
            return (
                f"size={t.size_or_type} bits_offset={data >> 16 & 0xFF} nr_bits={data & 0xFF} "
                f"encoding={encoding}"
            )
        if t.kind in (STRUCT, UNION, ENUM):
            return f"size={t.size_or_type} vlen={t.vlen}"
        if t.kind == ARRAY_KIND:
            elem, index, count = t.extra[0]
            return f"type_id={elem} index_type_id={index} nr_elems={count}"
        if t.kind == FWD:
            return "union" if t.kflag else "struct"
        return f"type_id={t.size_or_type}"

    # -- the phases ---------------------------------------------------------------------------
    def check(self) -> None:
        hdr_len, type_off, type_len, str_off, str_len = self.check_header()
        body = self.data[hdr_len:]
        self.check_strings(body, type_off, type_len, str_off, str_len)
        self.check_types(body, type_off, type_len)

    def check_header(self) -> tuple[int, int, int, int, int]:
        data = self.data
        if len(data) < MIN_HEADER:
            raise self.reject(errno.EINVAL, "hdr_len not found")
        hdr_len = int.from_bytes(data[4:8], "little")
        if len(data) < hdr_len:
            raise self.reject(errno.EINVAL, "btf_header not found")
        if any(data[HEADER.size : hdr_len]):
            raise self.reject(errno.E2BIG, "Unsupported btf_header")
        # The kernel copies min(hdr_len, 24) bytes into a zeroed header and uses that copy.
        fields = HEADER.unpack(data[: min(hdr_len, HEADER.size)].ljust(HEADER.size, b"\0"))
        magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = fields
        self.log.write(
            f"magic: {magic:#06x}\nversion: {version}\nflags: {flags:#x}\nhdr_len: {hdr_len}\n"
            f"type_off: {type_off}\ntype_len: {type_len}\nstr_off: {str_off}\n"
            f"str_len: {str_len}\nbtf_total_size: {len(data)}\n"
        )
        if magic != BTF_MAGIC:
            raise self.reject(errno.EINVAL, "Invalid magic")
        if version != BTF_VERSION:
            raise self.reject(ENOTSUPP, "Unsupported version")
        if flags:
            raise self.reject(ENOTSUPP, "Unsupported flags")
        if len(data) == hdr_len:
            raise self.reject(errno.EINVAL, "No data")
        self.check_sections(len(data) - hdr_len, (type_off, type_len), (str_off, str_len))
        return hdr_len, type_off, type_len, str_off, str_len

    def check_sections(self, expected: int, *sections: tuple[int, int]) -> None:
        total = 0
        for offset, length in sorted(sections):
            if expected < offset:
                raise self.reject(errno.EINVAL, "Invalid section offset")
            if total < offset:
                raise self.reject(errno.EINVAL, "Unsupported section found")
            if total > offset:
                raise self.reject(errno.EINVAL, "Section overlap found")
            if expected - total < length:
                raise self.reject(errno.EINVAL, "Total section length too long")
            total += length
        if total != expected:
            raise self.reject(errno.EINVAL, "Unsupported section found")

    def check_strings(
        self, body: bytes, type_off: int, type_len: int, str_off: int, str_len: int
    ) -> None:
        if str_off + str_len != len(body):
            raise self.reject(errno.EINVAL, "String section is not at the end")
        strings = body[str_off : str_off + str_len]
        if not strings or strings[0] or strings[-1] or str_len - 1 > MAX_NAME_OFFSET:
            raise self.reject(errno.EINVAL, "Invalid string section")
        self.strings = strings

    def check_types(self, body: bytes, type_off: int, type_len: int) -> None:
        if type_off % 4:
            raise self.reject(errno.EINVAL, "Unaligned type_off")
        if not type_len:
            raise self.reject(errno.EINVAL, "No type found")
        section = body[type_off : type_off + type_len]
        pos = 0
        while pos < len(section):
            t, used = self.check_meta(len(self.types) + 1, section, pos)
            self.types.append(t)
            pos += used
        for t in self.types:
            if t.kind not in (INT, ENUM, FWD):
                self.resolve(t.type_id)

    # -- check meta ---------------------------------------------------------------------------
    def check_meta(self, type_id: int, section: bytes, pos: int) -> tuple[BtfType, int]:
        left = len(section) - pos
        if left < TYPE_HEADER.size:
            raise self.reject(
                errno.EINVAL, f"[{type_id}] meta_left:{left} meta_needed:{TYPE_HEADER.size}"
            )
        name_off, info, size_or_type = TYPE_HEADER.unpack_from(section, pos)
        kind = info >> 24 & 0x1F
        if kind > self.max_kind or kind == 0:
            raise self.reject(errno.EINVAL, f"[{type_id}] Invalid kind:{kind}")
        if name_off >= len(self.strings):
            raise self.reject(errno.EINVAL, f"[{type_id}] Invalid name_offset:{name_off}")
        vlen = info & 0xFFFF
        kflag = bool(info >> 31)
        bare = BtfType(type_id, kind, name_off, vlen, kflag, size_or_type)
        record, count = self.record_layout(bare)
        needed = record.size * count
        if left - TYPE_HEADER.size < needed:
            why = f"meta_left:{left - TYPE_HEADER.size} meta_needed:{needed}"
            raise self.reject(errno.EINVAL, self.type_line(bare, details=False, why=why))
        start = pos + TYPE_HEADER.size
        extra = tuple(record.unpack_from(section, start + i * record.size) for i in range(count))
        t = attrs.evolve(bare, extra=tuple(tuple(e) + (0,) * (3 - len(e)) for e in extra))
        self.check_kind(t)
        return t, TYPE_HEADER.size + needed

    def record_layout(self, t: BtfType) -> tuple[struct.Struct, int]:
        """The records after the type header and how many (INT: one u32)."""
        if t.kind == INT:
            return struct.Struct("<I"), 1
        if t.kind in (STRUCT, UNION):
            return MEMBER, t.vlen
        if t.kind == ARRAY_KIND:
            return ARRAY, 1
        if t.kind == ENUM:
            return ENUM_VALUE, t.vlen
        if t.kind in REF_KINDS or t.kind == FWD:
            return struct.Struct(""), 0
        raise self.reject(
            errno.EINVAL,
            self.type_line(t, details=False, why="kind not modelled by the simulator"),
        )

    def valid_identifier(self, offset: int) -> bool:
        name = self.name(offset)
        return (
            0 < len(name) < KSYM_NAME_LEN
            and (name[0].isalpha() or name[0] == "_")
            and all(c.isalnum() or c == "_" for c in name)
            and name.isascii()
        )

    def check_kind(self, t: BtfType) -> None:
        if t.kind == INT:
            self.check_int(t)
        elif t.kind in (STRUCT, UNION):
            self.check_struct(t)
        elif t.kind == ARRAY_KIND:
            self.check_array(t)
        elif t.kind == ENUM:
            self.check_enum(t)
        elif t.kind == FWD:
            self.check_fwd(t)
        else:
            self.check_ref(t)

    def check_int(self, t: BtfType) -> None:
        data = t.extra[0][0]
        if t.vlen:
            raise self.reject(errno.EINVAL, self.type_line(t, why="vlen != 0"))
        if t.kflag:
            raise self.reject(errno.EINVAL, self.type_line(t, why="Invalid btf_info kind_flag"))
        if data & ~INT_MASK:
            why = f"Invalid int_data:{data:x}"
            raise self.reject(errno.EINVAL, self.type_line(t, details=False, why=why))
        nr_bits = (data & 0xFF) + (data >> 16 & 0xFF)
        if nr_bits > 128:
            raise self.reject(errno.EINVAL, self.type_line(t, why="nr_bits exceeds 128"))
        if -(-nr_bits // 8) > t.size_or_type:
            raise self.reject(errno.EINVAL, self.type_line(t, why="nr_bits exceeds type_size"))
        if (data >> 24 & 0xF) not in INT_ENCODINGS:
            raise self.reject(ENOTSUPP, self.type_line(t, why="Unsupported encoding"))
        self.log.write(self.type_line(t))

    def check_struct(self, t: BtfType) -> None:
        if t.name_off and not self.valid_identifier(t.name_off):
            raise self.reject(errno.EINVAL, self.type_line(t, why="Invalid name"))
        self.log.write(self.type_line(t))
        last = 0
        for member in t.extra:
            name_off, type_id, raw_offset = member
            offset = raw_offset & 0xFFFFFF if t.kflag else raw_offset
            if name_off >= len(self.strings):
                why = f"Invalid member name_offset:{name_off}"
                raise self.reject(errno.EINVAL, self.member_line(t, member, why))
            if name_off and not self.valid_identifier(name_off):
                raise self.reject(errno.EINVAL, self.member_line(t, member, "Invalid name"))
            if not type_id or type_id > MAX_TYPE_ID:
                raise self.reject(errno.EINVAL, self.member_line(t, member, "Invalid type_id"))
            if (t.kind == UNION and offset) or last > offset:
                why = "Invalid member bits_offset"
                raise self.reject(errno.EINVAL, self.member_line(t, member, why))
            if -(-offset // 8) > t.size_or_type:
                why = "Member bits_offset exceeds its struct size"
                raise self.reject(errno.EINVAL, self.member_line(t, member, why))
            self.log.write(self.member_line(t, member))
            last = offset

    def check_array(self, t: BtfType) -> None:
        elem, index, _ = t.extra[0]
        for bad, why in (
            (t.name_off, "Invalid name"),
            (t.vlen, "vlen != 0"),
            (t.kflag, "Invalid btf_info kind_flag"),
            (t.size_or_type, "size != 0"),
            (not elem or elem > MAX_TYPE_ID, "Invalid elem"),
            (not index or index > MAX_TYPE_ID, "Invalid index"),
        ):
            if bad:
                raise self.reject(errno.EINVAL, self.type_line(t, why=why))
        self.log.write(self.type_line(t))

    def check_enum(self, t: BtfType) -> None:
        size = t.size_or_type
        if size > 8 or size == 0 or size & (size - 1):
            raise self.reject(errno.EINVAL, self.type_line(t, why="Unexpected size"))
        if t.name_off and not self.valid_identifier(t.name_off):
            raise self.reject(errno.EINVAL, self.type_line(t, why="Invalid name"))
        self.log.write(self.type_line(t))
        for name_off, value, _ in t.extra:
            if name_off >= len(self.strings):
                raise self.reject(errno.EINVAL, f"\tInvalid name_offset:{name_off}")
            if not name_off or not self.valid_identifier(name_off):
                raise self.reject(errno.EINVAL, self.type_line(t, why="Invalid name"))
            shown = value if t.kflag else value & 0xFFFFFFFF
            self.log.write(f"\t{self.name(name_off)} val={shown}\n")

    def check_fwd(self, t: BtfType) -> None:
        if t.vlen:
            raise self.reject(errno.EINVAL, self.type_line(t, why="vlen != 0"))
        if not t.name_off or not self.valid_identifier(t.name_off):
            raise self.reject(errno.EINVAL, self.type_line(t, why="Invalid name"))
        self.log.write(self.type_line(t))

    def check_ref(self, t: BtfType) -> None:
        if t.vlen:
            raise self.reject(errno.EINVAL, self.type_line(t, why="vlen != 0"))
        if t.kflag:
            raise self.reject(errno.EINVAL, self.type_line(t, why="Invalid btf_info kind_flag"))
        if t.size_or_type > MAX_TYPE_ID:
            raise self.reject(errno.EINVAL, self.type_line(t, why="Invalid type_id"))
        named_ok = (
            bool(t.name_off) and self.valid_identifier(t.name_off)
            if t.kind == TYPEDEF
            else not t.name_off
        )
        if not named_ok:
            raise self.reject(errno.EINVAL, self.type_line(t, why="Invalid name"))
        self.log.write(self.type_line(t))

    # -- resolve ------------------------------------------------------------------------------
    def by_id(self, type_id: int) -> BtfType | None:
        return self.types[type_id - 1] if 0 < type_id <= len(self.types) else None

    def resolve(self, type_id: int) -> int | None:
        """The size of type `type_id` (None: no size, as void, FWD or a pointer target
        chain ending in one), checking the types it refers to on the way."""
        if type_id in self.sizes:
            return self.sizes[type_id]
        t = self.by_id(type_id)
        if t is None:
            return None
        if type_id in self._resolving:
            raise self.reject(errno.EEXIST, self.type_line(t, why="Loop detected"))
        self._resolving.add(type_id)
        size = self.resolve_kind(t)
        self._resolving.discard(type_id)
        self.sizes[type_id] = size
        return size

    def resolve_kind(self, t: BtfType) -> int | None:
        if t.kind in (INT, ENUM):
            return t.size_or_type
        if t.kind == FWD:
            return None
        if t.kind == PTR:
            target = self.by_id(t.size_or_type)
            if target is None or target.kind not in (STRUCT, UNION, FWD):
                # a pointer to a struct does not need the struct resolved (a sink)
                self.resolve_target(t, t.size_or_type, allow_void=True)
            return PTR_SIZE
        if t.kind in REF_KINDS:
            return self.resolve_target(t, t.size_or_type, allow_void=t.kind != TYPEDEF)
        if t.kind == ARRAY_KIND:
            return self.resolve_array(t)
        return self.resolve_struct(t)

    def resolve_target(self, t: BtfType, target: int, allow_void: bool) -> int | None:
        if target == 0 and allow_void:
            return None
        if self.by_id(target) is None:
            raise self.reject(errno.EINVAL, self.type_line(t, why="Invalid type_id"))
        return self.resolve(target)

    def resolve_array(self, t: BtfType) -> int:
        elem, index, count = t.extra[0]
        index_type = self.by_id(index)
        if index_type is None or self.resolve(index) is None:
            raise self.reject(errno.EINVAL, self.type_line(t, why="Invalid index"))
        elem_size = self.resolve(elem) if self.by_id(elem) is not None else None
        if elem_size is None:
            raise self.reject(errno.EINVAL, self.type_line(t, why="Invalid elem"))
        if elem_size * count > 0xFFFFFFFF:
            raise self.reject(errno.EINVAL, self.type_line(t, why="Array size overflows U32_MAX"))
        return elem_size * count

    def resolve_struct(self, t: BtfType) -> int:
        for member in t.extra:
            _, type_id, raw_offset = member
            member_type = self.by_id(type_id)
            member_size = self.resolve(type_id) if member_type is not None else None
            if member_type is None or member_size is None:
                self.log.write(self.type_line(t))
                raise self.reject(errno.EINVAL, self.member_line(t, member, "Invalid member"))
            offset = raw_offset & 0xFFFFFF if t.kflag else raw_offset
            why = self.member_fit(t, member_type, offset, member_size)
            if why:
                self.log.write(self.type_line(t))
                raise self.reject(errno.EINVAL, self.member_line(t, member, why))
        return t.size_or_type

    def member_fit(self, t: BtfType, member_type: BtfType, offset: int, size: int) -> str:
        """btf_int_check_member / btf_generic_check_member: why the member does not fit."""
        underlying = member_type
        while underlying.kind in REF_KINDS - {PTR}:
            target = self.by_id(underlying.size_or_type)
            if target is None:
                break
            underlying = target
        if underlying.kind == INT:
            data = underlying.extra[0][0]
            bits_off = offset + (data >> 16 & 0xFF)
            copy_bits = (data & 0xFF) + bits_off % 8
            if copy_bits > 128:
                return "nr_copy_bits exceeds 128"
            byte_off = bits_off // 8
            if t.size_or_type < byte_off or t.size_or_type - byte_off < -(-copy_bits // 8):
                return "Member exceeds struct_size"
            return ""
        if offset % 8:
            return "Member is not byte aligned"
        if t.size_or_type - offset // 8 < size:
            return "Member exceeds struct_size"
        return ""


class Btf(KernelObject):
    """A loaded BTF object."""

    id_space = "btf"
    anon_name = "btf"

    def __init__(self, kernel: Kernel, data: bytes, sizes: dict[int, int | None]) -> None:
        super().__init__(kernel.objects)
        self.kernel = kernel
        self.data = data
        self.name = b""
        self.kernel_btf = False
        self._sizes = sizes

    def type_size(self, type_id: int) -> int | None:
        """The resolved size of `type_id` (None: no such type, or a type without a size)."""
        return self._sizes.get(type_id)

    def fdinfo(self) -> list[tuple[str, str]]:
        return [("btf_id", str(self.id))]

    def btf_info(self, info: BpfBtfInfo) -> tuple[BpfBtfInfo, int]:
        """Fill `info` (the caller's copy); (info, ENOSPC or 0 to report after copying it)."""
        memory = self.kernel.memory
        info.id = self.id
        memory.write(info.btf, self.data[: min(len(self.data), info.btf_size)])
        info.btf_size = len(self.data)
        info.kernel_btf = int(self.kernel_btf)
        if not self.kernel.profile.has_behaviour("btf_info_name"):
            return info, 0
        buf, buf_len = info.name, info.name_len
        if bool(buf) != bool(buf_len):
            fail(errno.EINVAL, "name and name_len go together")
        info.name_len = len(self.name)
        if not buf:
            return info, 0
        if buf_len >= len(self.name) + 1:
            memory.write(buf, self.name + b"\0")
            return info, 0
        memory.write(buf, self.name[: buf_len - 1] + b"\0")
        return info, errno.ENOSPC


def btf_from_fd(kernel: Kernel, fd: int) -> Btf:
    """btf_get_by_fd: the BTF behind `fd` (EBADF, or EINVAL for another kind of fd)."""
    return kernel.fds.get(fd, Btf)


def max_kind(kernel: Kernel) -> int:
    """BTF_KIND_MAX of the kernel's version."""
    for kind, added in KIND_SINCE:
        if since(added) <= kernel.profile.version:
            return kind
    return RESTRICT


def _token_check(kernel: Kernel, attr: BtfLoadAttr) -> None:
    """btf_flags (6.9): only BPF_F_TOKEN_FD; no token exists here, so a token fd is EBADF
    (not open) or EINVAL (another kind of fd)."""
    if not kernel.profile.has_behaviour("bpf_token"):
        return
    if attr.btf_flags & ~MapFlag.TOKEN_FD:
        fail(errno.EINVAL, f"btf_flags {attr.btf_flags:#x}")
    if attr.btf_flags & MapFlag.TOKEN_FD:
        if kernel.fds.lookup(attr.btf_token_fd) is None:
            fail(errno.EBADF, f"token fd {attr.btf_token_fd} is not open")
        fail(errno.EINVAL, f"fd {attr.btf_token_fd} is not a bpf token")


@bpf_command(BpfCmd.BTF_LOAD)
def btf_load(call: BpfCall) -> int:
    attr = call.attr_as(BtfLoadAttr)
    kernel = call.kernel
    _token_check(kernel, attr)
    if not kernel.bpf_capable():
        fail(errno.EPERM, "BPF_BTF_LOAD needs CAP_BPF")
    if attr.btf_size > BTF_MAX_SIZE:
        fail(errno.E2BIG, f"btf_size {attr.btf_size} above 16 MiB")
    modern = kernel.profile.has_behaviour("log_true_size")
    try:
        VerifierLog.check_attr(attr.btf_log_level, attr.btf_log_buf, attr.btf_log_size, modern)
    except VerifierError as exc:
        fail(exc.errno, exc.message)
    log = VerifierLog(attr.btf_log_level, bool(attr.btf_log_buf), attr.btf_log_size, modern)
    data = kernel.memory.read(attr.btf, attr.btf_size)
    checker = BtfChecker(data, log, max_kind(kernel))
    try:
        checker.check()
        err = 0
    except BtfRejected as exc:
        err = exc.errno
    result = log.finalize()
    if result.text is not None:
        kernel.memory.write(attr.btf_log_buf, result.text)
    if modern and call.size >= BtfLoadAttr.btf_log_true_size.offset + 4:
        call.write_back("btf_log_true_size", result.true_size)
    err = result.error or err
    if err:
        fail(err, "BTF refused (see the log)")
    return kernel.fds.install(Btf(kernel, data, checker.sizes), os.O_RDONLY)
