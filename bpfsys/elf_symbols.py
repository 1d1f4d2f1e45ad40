"""Function symbol -> file offset in an ELF binary, the offset a uprobe is placed at.

Theory of operation
-------------------
A uprobe names a location as (file, file offset); an ELF symbol's `st_value` is a virtual
address (absolute in an executable, relative to the load base in a shared object or PIE). The
two are related by the PT_LOAD segment that holds the address: offset = value - p_vaddr +
p_offset. `file_offset` does that arithmetic over plain `LoadSegment` values (no I/O);
`symbol_file_offset` reads the segments and the symbol from a file with pyelftools.

Symbol lookup, as libbpf's `elf_find_func_offset` does it:

* only defined functions count (STT_FUNC, and STT_GNU_IFUNC, whose value is the *resolver*);
* `.symtab` is searched first, then `.dynsym` (a stripped library has only the latter);
* in `.dynsym`, a symbol whose `.gnu.version` entry has the hidden bit is an old, non-default
  version (`realpath@GLIBC_2.2.5` beside `realpath@@GLIBC_2.3`) and is skipped, so the offset
  is that of the definition `dlsym` and the dynamic linker bind to;
* several definitions of one name at different addresses are an error (`SymbolError`).

Library names ("libc") are not resolved through /etc/ld.so.cache: callers pass a path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import attrs
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

__all__ = ["LoadSegment", "SymbolError", "file_offset", "load_segments", "symbol_file_offset"]

FUNCTION_TYPES: Final = frozenset({"STT_FUNC", "STT_GNU_IFUNC", "STT_LOOS"})
"""Symbol types that name code (pyelftools spells STT_GNU_IFUNC as STT_LOOS, both are 10)."""
SYMBOL_TABLES: Final = (".symtab", ".dynsym")
"""Searched in this order; the first table with a definition answers."""
VERSYM_HIDDEN: Final = 0x8000
"""The `.gnu.version` bit of a non-default (hidden) symbol version."""


class SymbolError(ValueError):
    """The symbol cannot be turned into a file offset (absent, ambiguous, not file-backed) or
    the file is not an ELF object."""


@attrs.frozen
class LoadSegment:
    """The file-backed part of one PT_LOAD program header."""

    vaddr: int
    offset: int
    filesz: int

    def holds(self, vaddr: int) -> bool:
        """Whether `vaddr` lies in the bytes this segment maps from the file."""
        return self.vaddr <= vaddr < self.vaddr + self.filesz


def file_offset(vaddr: int, segments: Iterable[LoadSegment]) -> int:
    """The file offset of virtual address `vaddr`: through the first segment holding it.

    Raises SymbolError when no segment maps `vaddr` from the file (e.g. an address in .bss).
    """
    for segment in segments:
        if segment.holds(vaddr):
            return vaddr - segment.vaddr + segment.offset
    raise SymbolError(f"address {vaddr:#x} is in no file-backed PT_LOAD segment")


def load_segments(elf: Any) -> list[LoadSegment]:
    """The PT_LOAD segments of a pyelftools `ELFFile`, in program header order."""
    return [
        LoadSegment(seg["p_vaddr"], seg["p_offset"], seg["p_filesz"])
        for seg in elf.iter_segments()
        if seg["p_type"] == "PT_LOAD"
    ]


def _is_hidden_version(versym: Any, index: int) -> bool:
    """Whether `.gnu.version` (None: no versions) marks `.dynsym` entry `index` hidden."""
    if versym is None:
        return False
    ndx = versym.get_symbol(index)["ndx"]
    return isinstance(ndx, int) and bool(ndx & VERSYM_HIDDEN)


def _definitions(elf: Any, table: str, symbol: str) -> Iterator[int]:
    """The values of the defined functions named `symbol` in section `table`."""
    section = elf.get_section_by_name(table)
    if section is None:
        return
    versym = elf.get_section_by_name(".gnu.version") if table == ".dynsym" else None
    for index, sym in enumerate(section.iter_symbols()):
        if (
            sym.name == symbol
            and sym["st_info"]["type"] in FUNCTION_TYPES
            and sym["st_shndx"] != "SHN_UNDEF"
            and not _is_hidden_version(versym, index)
        ):
            yield int(sym["st_value"])


def _symbol_value(elf: Any, symbol: str, path: str) -> int:
    """The one address function `symbol` is defined at (first table that defines it)."""
    for table in SYMBOL_TABLES:
        values = sorted(set(_definitions(elf, table, symbol)))
        if len(values) > 1:
            shown = ", ".join(f"{v:#x}" for v in values)
            raise SymbolError(f"{path}: {symbol!r} is defined at several addresses ({shown})")
        if values:
            return values[0]
    tables = " or ".join(SYMBOL_TABLES)
    raise SymbolError(f"{path}: no defined function {symbol!r} in {tables}")


def symbol_file_offset(path: str | os.PathLike[str], symbol: str) -> int:
    """The file offset of function `symbol` in the ELF file at `path` (see the module rules).

    Raises SymbolError (a ValueError) for an absent or ambiguous symbol, an address outside
    the file-backed segments, or a file that is not ELF; OSError when the file cannot be read.
    """
    if not isinstance(symbol, str):
        raise TypeError(f"symbol must be a str, got {type(symbol).__name__}")
    if not symbol:
        raise ValueError("symbol must be non-empty")
    name = os.fspath(path)
    with open(name, "rb") as f:
        try:
            elf = ELFFile(f)
            value = _symbol_value(elf, symbol, name)
            segments: Sequence[LoadSegment] = load_segments(elf)
        except ELFError as exc:
            raise SymbolError(f"{name}: not a readable ELF file ({exc})") from None
    try:
        return file_offset(value, segments)
    except SymbolError as exc:
        raise SymbolError(f"{name}: {symbol!r}: {exc}") from None
