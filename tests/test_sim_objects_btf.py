"""BTF_LOAD, BTF info, fdinfo and ids on every backend: the same errno, log text and
log_true_size from the simulator's BTF checker as from the live kernel's."""

from __future__ import annotations

import ctypes
import struct

import pytest
from objects_support import (
    bpf,
    btf_blob,
    btf_int,
    btf_load,
    btf_struct,
    fdinfo,
    info_call,
    ok,
)

from bpfsys.abi import BpfBtfInfo, BpfCmd, BtfLoadAttr, GetIdAttr
from bpfsys.backend import Backend

INT = btf_blob(btf_int(1), b"\0int\0")
HEADER_LOG = (
    "magic: 0xeb9f\nversion: 1\nflags: 0x0\nhdr_len: 24\ntype_off: 0\ntype_len: {tl}\n"
    "str_off: {tl}\nstr_len: {sl}\nbtf_total_size: {total}\n"
)
INT_LINE = "[1] INT int size=4 bits_offset=0 nr_bits=32 encoding=SIGNED\n"
PAIR = b"\0int\0pair\0a\0b\0"


def header(type_len: int, str_len: int) -> str:
    return HEADER_LOG.format(tl=type_len, sl=str_len, total=24 + type_len + str_len)


def pair(size: int = 8, members: list[tuple[int, int, int]] | None = None) -> bytes:
    fields = [(10, 1, 0), (12, 1, 32)] if members is None else members
    return btf_blob(btf_int(1) + btf_struct(5, size, fields), PAIR)


STRUCT_LOG = (
    header(52, 14)
    + INT_LINE
    + "[2] STRUCT pair size=8 vlen=2\n\ta type_id=1 bits_offset=0\n\tb type_id=1 bits_offset=32\n"
)

CASES = [
    ("int", INT, 0, header(16, 5) + INT_LINE),
    ("struct", pair(), 0, STRUCT_LOG),
    ("bad-magic", btf_blob(btf_int(1), b"\0int\0", magic=0x1234), "EINVAL", None),
    ("version-2", btf_blob(btf_int(1), b"\0int\0", version=2), "ENOTSUPP", None),
    ("flags", btf_blob(btf_int(1), b"\0int\0", flags=1), "ENOTSUPP", None),
    ("hdr-len-16", btf_blob(btf_int(1), b"\0int\0", hdr_len=16), "EINVAL", None),
    ("empty", b"", "EINVAL", "hdr_len not found"),
    ("short", INT[:10], "EINVAL", "btf_header not found"),
    ("no-strings", btf_blob(btf_int(1), b""), "EINVAL", None),
    ("strings-without-nul", btf_blob(btf_int(1), b"\0int"), "EINVAL", None),
    ("strings-not-starting-with-nul", btf_blob(btf_int(1), b"xint\0"), "EINVAL", None),
    ("no-types", btf_blob(b"", b"\0"), "EINVAL", None),
    ("name-offset", btf_blob(btf_int(100), b"\0int\0"), "EINVAL", None),
    ("kind-31", btf_blob(struct.pack("<III", 1, 31 << 24, 4), b"\0int\0"), "EINVAL", None),
    ("int-nr-bits", btf_blob(btf_int(1, size=3), b"\0int\0"), "EINVAL", None),
    ("int-33-bits", btf_blob(btf_int(1, bits=33), b"\0int\0"), "EINVAL", None),
    ("int-encoding", btf_blob(btf_int(1, encoding=8), b"\0int\0"), "ENOTSUPP", None),
    ("type-len-too-long", btf_blob(btf_int(1), b"\0int\0", type_len=1000), "EINVAL", None),
    ("int-cut-short", btf_blob(btf_int(1)[:12], b"\0int\0"), "EINVAL", None),
    (
        "header-tail-nonzero",
        btf_blob(btf_int(1), b"\0int\0", hdr_len=28, extra_header=b"\1\0\0\0"),
        "E2BIG",
        "Unsupported btf_header",
    ),
    (
        "header-tail-zero",
        btf_blob(btf_int(1), b"\0int\0", hdr_len=28, extra_header=bytes(4)),
        0,
        None,
    ),
    ("member-type", pair(members=[(10, 7, 0), (12, 1, 32)]), "EINVAL", None),
    ("member-beyond", pair(size=4), "EINVAL", None),
    ("member-offset-33", pair(members=[(10, 1, 0), (12, 1, 33)]), "EINVAL", None),
    (
        "members-cut-short",
        btf_blob(btf_int(1) + btf_struct(5, 8, [(10, 1, 0), (12, 1, 32)])[:-12], PAIR),
        "EINVAL",
        None,
    ),
    (
        "struct-first",
        btf_blob(btf_struct(5, 8, [(10, 2, 0), (12, 2, 32)]) + btf_int(1), PAIR),
        0,
        None,
    ),
    ("void-member", pair(members=[(10, 0, 0)]), "EINVAL", None),
    ("offsets-backwards", pair(members=[(10, 1, 32), (12, 1, 0)]), "EINVAL", None),
    (
        "struct-bad-name",
        btf_blob(btf_int(1) + btf_struct(5, 4, [(8, 1, 0)]), b"\0int\x001x\0a\0"),
        "EINVAL",
        None,
    ),
]


@pytest.mark.parametrize(
    ("blob", "expected", "log"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_btf_load(backend: Backend, blob: bytes, expected: object, log: str | None) -> None:
    result, text, true_size = btf_load(backend, blob, log_level=1, log_size=4096)
    if isinstance(expected, int):
        assert isinstance(result, int)
        backend.close(result)
    else:
        assert result == expected
    if log is not None:
        assert text == log
    assert true_size == len(text) + 1
    quiet, quiet_text, quiet_size = btf_load(backend, blob)
    assert quiet_text == "" and quiet_size == 0
    assert isinstance(quiet, int) == isinstance(expected, int)
    if isinstance(quiet, int):
        backend.close(quiet)


def test_btf_logs_match_exactly(backend: Backend) -> None:
    """The log lines of failing loads, as the live kernel (6.18) writes them."""
    failing = {name: blob for name, blob, expected, _ in CASES if not isinstance(expected, int)}
    got = {name: btf_load(backend, blob, 1, 4096)[1] for name, blob in failing.items()}
    assert got["bad-magic"] == header(16, 5).replace("0xeb9f", "0x1234") + "Invalid magic"
    assert got["version-2"].endswith("Unsupported version")
    assert got["hdr-len-16"].endswith(
        "str_off: 0\nstr_len: 0\nbtf_total_size: 45\nUnsupported section found"
    )
    assert got["no-strings"].endswith("Invalid string section")
    assert got["no-types"].endswith("No type found")
    assert got["name-offset"].endswith("[1] Invalid name_offset:100")
    assert got["kind-31"].endswith("[1] Invalid kind:31")
    assert got["int-nr-bits"].endswith(
        "[1] INT int size=3 bits_offset=0 nr_bits=32 encoding=SIGNED nr_bits exceeds type_size\n"
    )
    assert got["type-len-too-long"].endswith("Total section length too long")
    assert got["int-cut-short"].endswith("[1] INT int meta_left:0 meta_needed:4\n")
    assert got["member-type"].endswith(
        "[2] STRUCT pair size=8 vlen=2\n\ta type_id=7 bits_offset=0 Invalid member\n"
    )
    assert got["member-beyond"].endswith(
        "[2] STRUCT pair size=4 vlen=2\n\tb type_id=1 bits_offset=32 Member exceeds struct_size\n"
    )


@pytest.mark.parametrize(
    ("log_level", "log_size", "expected", "kept"),
    [
        (1, 10, "ENOSPC", "lid magic"),  # rotating (6.4+): the log's tail
        (1 | 8, 10, "ENOSPC", "magic: 0x"),  # BPF_LOG_FIXED: its head
        (1, 129, "EINVAL", "magic"),  # the whole log fits: the load's own errno
        (1, 128, "ENOSPC", "agic: 0x1234"),  # one byte short: the head's first byte goes
    ],
)
def test_btf_log_buffer(
    backend: Backend, log_level: int, log_size: int, expected: str, kept: str
) -> None:
    bad = btf_blob(btf_int(1), b"\0int\0", magic=0x1234)
    result, text, true_size = btf_load(backend, bad, log_level, log_size)
    assert result == expected
    assert text.startswith(kept) and len(text) == min(log_size - 1, 128)
    assert true_size == 129


@pytest.mark.parametrize(
    ("log_level", "log_size", "with_buffer"),
    [(1, 0, True), (16, 4096, True), (0, 4096, True), (1, 4096, False), (1, 1 << 30, True)],
)
def test_btf_log_attributes(
    backend: Backend, log_level: int, log_size: int, with_buffer: bool
) -> None:
    data = ctypes.create_string_buffer(INT)
    log = ctypes.create_string_buffer(16)
    attr = BtfLoadAttr(
        btf=ctypes.addressof(data),
        btf_size=len(INT),
        btf_log_level=log_level,
        btf_log_size=log_size,
        btf_log_buf=ctypes.addressof(log) if with_buffer else 0,
    )
    assert bpf(backend, BpfCmd.BTF_LOAD, attr) == "EINVAL"


def test_btf_load_bad_pointer_and_sizes(backend: Backend) -> None:
    assert bpf(backend, BpfCmd.BTF_LOAD, BtfLoadAttr(btf=0, btf_size=40)) == "EFAULT"
    assert bpf(backend, BpfCmd.BTF_LOAD, BtfLoadAttr(btf=0, btf_size=0)) == "EINVAL"
    assert bpf(backend, BpfCmd.BTF_LOAD, BtfLoadAttr(btf=0, btf_size=17 << 20)) == "E2BIG"


def test_btf_true_size_needs_the_field_in_the_attr(backend: Backend) -> None:
    """log_true_size is written back only when the attr passed reaches it."""
    data = ctypes.create_string_buffer(INT)
    log = ctypes.create_string_buffer(4096)
    attr = BtfLoadAttr(
        btf=ctypes.addressof(data),
        btf_size=len(INT),
        btf_log_level=1,
        btf_log_size=4096,
        btf_log_buf=ctypes.addressof(log),
    )
    fd = ok(bpf(backend, BpfCmd.BTF_LOAD, attr, BtfLoadAttr.btf_log_true_size.offset))
    assert attr.btf_log_true_size == 0
    backend.close(fd)


def btf_id(backend: Backend, fd: int) -> int:
    info = BpfBtfInfo()
    assert info_call(backend, fd, info) == (0, 32)
    return int(info.id)


def test_btf_info(backend: Backend) -> None:
    fd = ok(btf_load(backend, pair())[0])
    data = ctypes.create_string_buffer(256)
    name = ctypes.create_string_buffer(16)
    info = BpfBtfInfo(
        btf=ctypes.addressof(data), btf_size=20, name=ctypes.addressof(name), name_len=16
    )
    assert info_call(backend, fd, info) == (0, 32)
    assert info.btf_size == len(pair()) and data.raw[:20] == pair()[:20] and data.raw[20] == 0
    assert (info.name_len, name.value, info.kernel_btf) == (0, b"", 0)
    assert info.id == btf_id(backend, fd)
    half = BpfBtfInfo(name=ctypes.addressof(name))
    assert info_call(backend, fd, half) == ("EINVAL", 32)
    tail = ctypes.create_string_buffer(40)
    tail[35] = b"x"
    assert info_call(backend, fd, tail, 40)[0] == "E2BIG"
    assert fdinfo(backend, fd) == {"pos": "0", "flags": "02000000", "btf_id": str(info.id)}
    backend.close(fd)


def test_btf_ids(backend: Backend) -> None:
    fd = ok(btf_load(backend, INT)[0])
    bid = btf_id(backend, fd)
    attr = GetIdAttr(start_id=bid - 1)
    assert bpf(backend, BpfCmd.BTF_GET_NEXT_ID, attr) == 0 and attr.next_id == bid
    again = ok(bpf(backend, BpfCmd.BTF_GET_FD_BY_ID, GetIdAttr(start_id=bid)))
    backend.close(fd)
    assert btf_id(backend, again) == bid
    backend.close(again)
    assert bpf(backend, BpfCmd.BTF_GET_FD_BY_ID, GetIdAttr(start_id=bid)) == "ENOENT"
