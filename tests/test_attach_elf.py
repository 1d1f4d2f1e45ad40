"""`bpfsys.elf_symbols`: function symbol -> file offset, checked against the dynamic linker
(where libc's functions are mapped in this process) and against section headers."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import given
from hypothesis import strategies as st
from test_attach import libc_with_getpid, non_pie_binary  # noqa: F401  (a fixture)

from bpfsys.elf_symbols import LoadSegment, SymbolError, file_offset, symbol_file_offset


# ---------------------------------------------------------------------------------------------
# The arithmetic
# ---------------------------------------------------------------------------------------------
@given(
    vaddr=st.integers(0, 1 << 47),
    offset=st.integers(0, 1 << 40),
    filesz=st.integers(1, 1 << 30),
    inside=st.integers(0, (1 << 30) - 1),
)
def test_file_offset_through_the_holding_segment(
    vaddr: int, offset: int, filesz: int, inside: int
) -> None:
    below = LoadSegment(0, 0, 0)  # empty: holds nothing
    segment = LoadSegment(vaddr, offset, filesz)
    at = vaddr + inside % filesz
    assert file_offset(at, [below, segment]) == offset + inside % filesz
    with pytest.raises(SymbolError, match="no file-backed PT_LOAD"):
        file_offset(vaddr + filesz, [below, segment])  # one past the file image (.bss)


def test_file_offset_uses_the_first_holding_segment() -> None:
    segments = [LoadSegment(0x400000, 0, 0x1000), LoadSegment(0x401000, 0x1000, 0x500)]
    assert file_offset(0x401136, segments) == 0x1136
    assert file_offset(0x400010, segments) == 0x10
    with pytest.raises(SymbolError):
        file_offset(0x3FFFFF, segments)


# ---------------------------------------------------------------------------------------------
# Real files
# ---------------------------------------------------------------------------------------------
def mapped_file_offset(address: int, path: str) -> int:
    """The file offset of `address` in this process, from the /proc/self/maps mapping of
    `path` that holds it: the dynamic linker's answer."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end and fields[-1] == path:
            return address - start + int(fields[2], 16)
    raise AssertionError(f"{address:#x} is not mapped from {path}")


@pytest.mark.parametrize("symbol", ["getpid", "realpath", "strtol", "qsort"])
def test_libc_functions_match_the_dynamic_linker(symbol: str) -> None:
    """realpath has two versions (@GLIBC_2.2.5 hidden, @@GLIBC_2.3 default): dlsym binds the
    default one, and so must the lookup."""
    path = libc_with_getpid()
    address = ctypes.cast(getattr(ctypes.CDLL(path), symbol), ctypes.c_void_p).value
    assert address is not None
    assert symbol_file_offset(path, symbol) == mapped_file_offset(address, path)


def section_file_offset(path: Path, symbol: str) -> tuple[int, int]:
    """(st_value, file offset through the symbol's section header): libbpf's other way."""
    with open(path, "rb") as f:
        elf: Any = ELFFile(f)
        (sym,) = elf.get_section_by_name(".symtab").get_symbol_by_name(symbol)
        section = elf.get_section(sym["st_shndx"])
        value = int(sym["st_value"])
        return value, value - int(section["sh_addr"]) + int(section["sh_offset"])


def test_non_pie_symbol_is_translated(non_pie_binary: Path) -> None:  # noqa: F811
    value, expected = section_file_offset(non_pie_binary, "bpfsys_target")
    assert value != expected  # an absolute address: the translation matters
    assert symbol_file_offset(non_pie_binary, "bpfsys_target") == expected


@pytest.mark.parametrize(
    ("symbol", "message"),
    [
        ("atoi", "no defined function 'atoi'"),  # only an undefined import in the binary
        ("no_such_symbol", "no defined function"),
    ],
)
def test_symbols_that_are_not_defined_functions(
    non_pie_binary: Path,  # noqa: F811
    symbol: str,
    message: str,
) -> None:
    with pytest.raises(SymbolError, match=message):
        symbol_file_offset(non_pie_binary, symbol)


def test_data_symbols_are_not_functions() -> None:
    with pytest.raises(SymbolError, match="no defined function 'environ'"):
        symbol_file_offset(libc_with_getpid(), "environ")


def test_not_an_elf_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an ELF file\n")
    with pytest.raises(SymbolError, match="not a readable ELF file"):
        symbol_file_offset(text, "main")


def test_bad_symbol_arguments(non_pie_binary: Path) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="non-empty"):
        symbol_file_offset(non_pie_binary, "")
    untyped: Any = 3
    with pytest.raises(TypeError):
        symbol_file_offset(non_pie_binary, untyped)


def test_a_name_defined_at_two_addresses_is_ambiguous(tmp_path: Path) -> None:
    """Two translation units with a static function of the same name: .symtab holds both."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    sources = []
    for unit in ("a", "b"):
        source = tmp_path / f"{unit}.c"
        source.write_text(
            f"__attribute__((noinline)) static int twin(int x) {{ return x + '{unit}'; }}\n"
            f"int call_{unit}(int x) {{ return twin(x); }}\n"
        )
        sources.append(str(source))
    library = tmp_path / "libtwins.so"
    subprocess.run(
        [compiler, "-O1", "-shared", "-fPIC", "-o", str(library), *sources],
        check=True,
        capture_output=True,
    )
    with pytest.raises(SymbolError, match="'twin' is defined at several addresses"):
        symbol_file_offset(library, "twin")
    assert symbol_file_offset(library, "call_a") != symbol_file_offset(library, "call_b")
