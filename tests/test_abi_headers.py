"""The ABI mirrors against the installed kernel headers, through the C compiler.

A C file is generated that prints sizeof and offsetof of every mirrored field and the value of
every mirrored constant that the installed headers know (by LINUX_VERSION_CODE and each item's
`since`); the test compares them with bpfsys.abi. Skipped where no compiler or headers exist.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from bpfsys import abi
from bpfsys.kversion import KernelVersion, since

INCLUDE = Path("/usr/include/linux")
CC = shutil.which("cc") or shutil.which("gcc")

pytestmark = pytest.mark.skipif(
    CC is None or not (INCLUDE / "bpf.h").exists() or not (INCLUDE / "perf_event.h").exists(),
    reason="needs a C compiler and /usr/include/linux/{bpf,perf_event,version}.h",
)


def header_version() -> KernelVersion:
    text = (INCLUDE / "version.h").read_text()
    match = re.search(r"#define LINUX_VERSION_CODE (\d+)", text)
    assert match is not None, "LINUX_VERSION_CODE not found in linux/version.h"
    return KernelVersion.from_code(int(match.group(1)))


def struct_classes() -> list[type[abi.AbiStruct]]:
    found: list[type[abi.AbiStruct]] = []
    pending: list[type[abi.AbiStruct]] = [abi.AbiStruct]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.c_name is not None and cls._spec_:
            found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


def field_paths(
    cls: type[abi.AbiStruct] | type[abi.AbiUnion], prefix: str, base: int, hv: KernelVersion
) -> Iterator[tuple[str, str, int, int]]:
    """(python path, C path, offset, size) of every field the headers of `hv` know."""
    for name, ctype, added in cls._spec_:
        if since(added) > hv or name.startswith("_"):
            continue
        c_name = cls.c_fields.get(name, name)
        if c_name is None:
            continue
        field = getattr(cls, name)
        c_path = f"{prefix}.{c_name}".strip(".") if c_name else prefix
        offset = base + field.offset
        if isinstance(ctype, type) and issubclass(ctype, abi.AbiStruct | abi.AbiUnion):
            yield from field_paths(ctype, c_path, offset, hv)
        else:
            yield f"{cls.__name__}.{name}", c_path, offset, field.size


def fully_known(cls: type[abi.AbiStruct] | type[abi.AbiUnion], hv: KernelVersion) -> bool:
    """Whether every field, nested ones included, is older than `hv`."""
    for _, ctype, added in cls._spec_:
        if since(added) > hv:
            return False
        nested = isinstance(ctype, type) and issubclass(ctype, abi.AbiStruct | abi.AbiUnion)
        if nested and not fully_known(ctype, hv):
            return False
    return True


def constants(hv: KernelVersion) -> dict[str, int]:
    values = {name: value for name, (value, added) in abi.C_CONSTANTS.items() if added <= hv}
    members: list[abi.VersionedEnum | abi.VersionedFlag] = [
        member for enum_cls in abi.VersionedEnum.__subclasses__() for member in enum_cls
    ]
    members += [
        member
        for flag_cls in abi.VersionedFlag.__subclasses__()
        if flag_cls is not abi.PerfAttrFlag  # bit fields: test_perf_attr_flag_bits
        for member in flag_cls
    ]
    for member in members:
        if member.since <= hv:
            values[member.c_name] = int(member)
    return values


@cache
def compile_and_run(tmp: Path) -> dict[str, int]:
    hv = header_version()
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#include <string.h>",
        "#include <stdint.h>",
        "#include <linux/bpf.h>",
        "#include <linux/perf_event.h>",
        '#define P(k, v) printf("%s %llu\\n", k, (unsigned long long)(v))',
        "int main(void) {",
    ]
    for cls in struct_classes():
        c_type = cls.c_name
        prefix = getattr(cls, "c_member", "")
        if not isinstance(cls, type) or not issubclass(cls, abi.BpfAttr):
            lines.append(f'P("sizeof {c_type}", sizeof({c_type}));')
        for py, c_path, _, _ in field_paths(cls, prefix, 0, hv):
            lines.append(f'P("offsetof {py}", offsetof({c_type}, {c_path}));')
            lines.append(f'P("sizeof {py}", sizeof((({c_type} *)0)->{c_path}));')
    for name, _ in sorted(constants(hv).items()):
        lines.append(f'P("const {name}", {name});')
    flag_word = "offsetof(struct perf_event_attr, read_format) + 8"
    for flag in abi.PerfAttrFlag:
        if flag.since > hv:
            continue
        name = flag.c_name
        if name.startswith("precise_ip_"):
            field, value = "precise_ip", 1 << int(name[-1])
        else:
            field, value = name, 1
        lines.append(
            "{ struct perf_event_attr a; uint64_t w; memset(&a, 0, sizeof a); "
            f"a.{field} = {value}; memcpy(&w, (char *)&a + {flag_word}, 8); "
            f'P("flag {name}", w); }}'
        )
    lines += ["return 0;", "}"]
    source = tmp / "abi_check.c"
    source.write_text("\n".join(lines) + "\n")
    binary = tmp / "abi_check"
    assert CC is not None
    subprocess.run([CC, "-std=gnu11", "-o", str(binary), str(source)], check=True)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    result: dict[str, int] = {}
    for line in out.splitlines():
        key, _, number = line.rpartition(" ")
        result[key] = int(number)
    return result


@pytest.fixture(scope="module")
def c_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    return compile_and_run(tmp_path_factory.mktemp("abi"))


@pytest.mark.parametrize("cls", struct_classes(), ids=lambda c: c.__name__)
def test_struct_layout_matches_header(cls: type[abi.AbiStruct], c_values: dict[str, int]) -> None:
    hv = header_version()
    checked = 0
    for py, _, offset, size in field_paths(cls, getattr(cls, "c_member", ""), 0, hv):
        assert c_values[f"offsetof {py}"] == offset, f"offset of {py}"
        assert c_values[f"sizeof {py}"] == size, f"size of {py}"
        checked += 1
    assert checked > 0
    if not issubclass(cls, abi.BpfAttr):
        c_size = c_values[f"sizeof {cls.c_name}"]
        if fully_known(cls, hv):
            assert ctypes.sizeof(cls) == c_size
        else:
            assert cls.sizeof_for(hv) <= c_size <= ctypes.sizeof(cls)


def test_constants_match_header(c_values: dict[str, int]) -> None:
    expected = constants(header_version())
    assert len(expected) > 400
    wrong = {
        name: (value, c_values[f"const {name}"])
        for name, value in expected.items()
        if c_values[f"const {name}"] != value & 0xFFFFFFFFFFFFFFFF
    }
    assert wrong == {}


def test_perf_attr_flag_bits(c_values: dict[str, int]) -> None:
    hv = header_version()
    for flag in abi.PerfAttrFlag:
        if flag.since <= hv:
            assert c_values[f"flag {flag.c_name}"] == int(flag), flag.c_name


def test_attr_sizes_by_version() -> None:
    """size_for() gives the attr sizes that kernels of each version knew."""
    assert abi.PerfEventAttr.sizeof_for(since("5.13")) == abi.PERF_ATTR_SIZE_VER7
    assert abi.PerfEventAttr.sizeof_for(since("6.3")) == abi.PERF_ATTR_SIZE_VER8
    assert abi.PerfEventAttr.sizeof_for(since("3.7")) == abi.PERF_ATTR_SIZE_VER3
    assert abi.PerfEventAttr.size_for(since("3.7")) == 92
    assert abi.MapCreateAttr.size_for(since("4.14")) == 28
    assert abi.ProgLoadAttr.size_for(since("4.15")) == 68
    assert abi.ProgLoadAttr.size_for(since("6.4")) == 144
