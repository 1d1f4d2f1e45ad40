"""Constant strings in read-only maps (ARG_PTR_TO_CONST_STR) and bpf_snprintf's format check.

Theory of operation
-------------------
A helper argument of kind `Arg.CONST_STR` (bpf_snprintf's fmt) must point into a map value
whose bytes the program can never change, so the verifier can read the string at load time
(kernel/bpf/verifier.c check_reg_const_str, 6.18). `check_const_str` applies its rules in the
kernel's order, each refusal with the kernel's errno and log line:

1. the map is read-only for programs: BPF_F_RDONLY_PROG and frozen (bpf_map_is_rdonly), else
   EACCES "R<n> does not point to a readonly map'";
2. the offset is a constant, else EACCES "R<n> is not a constant address'";
3. the map type gives direct value access (a plain ARRAY), else EACCES "no direct value access
   support for this map type";
4. the rest of the value from the fixed offset is readable (check_map_access);
5. direct value access succeeds: one element (ENOTSUPP otherwise) and the offset inside the
   value (EINVAL otherwise), "direct value access on string failed";
6. a NUL in element 0 between the offset and the end of the value, else EINVAL "string is not
   zero-terminated". The kernel reads element 0 whatever element the pointer came from.

`check_snprintf_call` is check_bpf_snprintf_call, run once the arguments passed: data_len's
known value must be a multiple of 8 (EINVAL, no log line), and the format must pass
bpf_bprintf_prepare with data_len / 8 arguments (EINVAL "Invalid format string").
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final

from bpfsys.abi import MapFlag, MapType
from kernelsim.errors import ENOTSUPP
from kernelsim.helpers.bprintf import BprintfError, check_format
from kernelsim.prog.verifier.regs import Reg

if TYPE_CHECKING:
    from kernelsim.maps.base import BpfMap
    from kernelsim.prog.verifier.check import Checker

DIRECT_VALUE_TYPES: Final = frozenset({MapType.ARRAY})
"""Map types with map_direct_value_addr (the modelled ones)."""


def _signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


def _map_off(reg: Reg) -> int:
    return reg.off + _signed(reg.var_off.value)


def _element_zero(bpf_map: BpfMap) -> bytes:
    return bpf_map.lookup(bytes(bpf_map.key_size))


def check_const_str(c: Checker, regno: int, reg: Reg) -> None:
    """check_reg_const_str for a register already known to be a map value pointer."""
    bpf_map = reg.map
    assert bpf_map is not None
    if not (bpf_map.map_flags & MapFlag.RDONLY_PROG and bpf_map.frozen):
        raise c.fail(errno.EACCES, f"R{regno} does not point to a readonly map'")
    if not reg.var_off.is_const():
        raise c.fail(errno.EACCES, f"R{regno} is not a constant address'")
    if bpf_map.map_type not in DIRECT_VALUE_TYPES:
        raise c.fail(errno.EACCES, "no direct value access support for this map type")
    c.region_access(regno, reg, reg.off, bpf_map.value_size - reg.off, bpf_map.value_size)
    map_off = _map_off(reg)
    if bpf_map.max_entries != 1:
        raise c.fail(ENOTSUPP, "direct value access on string failed")
    if not 0 <= map_off < bpf_map.value_size:
        raise c.fail(errno.EINVAL, "direct value access on string failed")
    if b"\0" not in _element_zero(bpf_map)[map_off:]:
        raise c.fail(errno.EINVAL, "string is not zero-terminated")


def check_snprintf_call(c: Checker, fmt_reg: Reg, data_len_reg: Reg) -> None:
    """check_bpf_snprintf_call: the format against the number of arguments data_len gives."""
    data_len = data_len_reg.var_off.value
    if data_len % 8:
        raise c.fail(errno.EINVAL, "")
    assert fmt_reg.map is not None
    value = _element_zero(fmt_reg.map)[_map_off(fmt_reg) :]
    try:
        check_format(value[: value.index(b"\0")], data_len // 8)
    except BprintfError as error:
        raise c.fail(error.errno, "Invalid format string") from None
