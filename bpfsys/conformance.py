"""The bpf_conformance ``.data`` test-file format: parse one file into a `ConformanceCase`.

A file is a list of sections, each opened by a line ``-- NAME``; lines before the first section
(the licence header) must be blank or ``#`` comments. Sections:

- ``asm``: uBPF-style assembler text, kept verbatim (`bpfsys.asm.assemble_text` reads it).
- ``raw``: the program as hex, one instruction a line, either eight two-digit bytes
  (``07 00 01 00 01 00 00 00``) or one 64-bit number whose little-endian bytes are the slot
  (``0x5566778800000018``, as the reference parser reads them).
- ``mem``: hex bytes of the input memory (r1 points at a copy, r2 holds its length).
- ``result``: the expected r0, hex (``0x..``) or decimal.
- ``error``: the program must be rejected; the text, if any, is the expected message.
- ``c``: the C source the program was compiled from (kept verbatim, informational).
- ``no register offset``: a flag (recorded in `flags`; any text under it is ignored, as the
  reference runner ignores it).

In every section but ``asm`` and ``c``, blank lines and lines starting with ``#`` are skipped.
An unknown or repeated section, or malformed hex, raises `ConformanceError` naming the line (the
reference runner skips such a file; a file it would skip is rejected here, not silently passed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import attrs

from bpfsys.asm import AsmError, Insn, assemble_text, decode

__all__ = ["ConformanceCase", "ConformanceError", "load_case", "load_cases", "parse_case"]

_FLAGS: Final = frozenset({"no register offset"})
_SECTIONS: Final = frozenset({"asm", "raw", "mem", "result", "error", "c"}) | _FLAGS
_BYTE_RE: Final = re.compile(r"[0-9a-fA-F]{1,2}")
_WORD_RE: Final = re.compile(r"0[xX][0-9a-fA-F]{1,16}")
_RESULT_RE: Final = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")


class ConformanceError(ValueError):
    """A ``.data`` file that does not follow the format (the message names file and line)."""


@attrs.frozen
class ConformanceCase:
    """One conformance test.

    `asm`/`c_source` are the section texts (None when absent), `raw` the ``-- raw`` bytes,
    `mem` the input memory (empty when absent), `result` the expected r0 (None when absent),
    `error` the expected rejection message (``""`` for a bare ``-- error``, None when the
    program must not be rejected), `flags` the flag sections present, and `asm_line` the file
    line number of the first line of `asm`.
    """

    name: str
    asm: str | None = None
    raw: bytes | None = None
    mem: bytes = b""
    result: int | None = None
    error: str | None = None
    flags: frozenset[str] = frozenset()
    c_source: str | None = None
    asm_line: int | None = None

    def program(self) -> list[Insn]:
        """The instructions: the ``raw`` section if there is one (as the reference runner
        prefers it), else the assembled ``asm`` section.

        AsmError line numbers are file line numbers. ConformanceError if the file has neither.
        """
        if self.raw is not None:
            return decode(self.raw)
        if self.asm is None or self.asm_line is None:
            raise ConformanceError(f"{self.name}: no -- asm or -- raw section")
        try:
            return assemble_text(self.asm)
        except AsmError as error:
            if error.line is None:
                raise
            line = error.line + self.asm_line - 1
            raise AsmError(f"{self.name}: {error.reason}", line=line, text=error.text) from None


def _hex_bytes(token: str, where: str) -> bytes:
    if _BYTE_RE.fullmatch(token):
        return bytes([int(token, 16)])
    raise ConformanceError(f"{where}: {token!r} is not a hex byte")


def _raw_line(line: str, where: str) -> bytes:
    tokens = line.split()
    if len(tokens) == 8 and all(len(token) == 2 for token in tokens):
        return b"".join(_hex_bytes(token, where) for token in tokens)
    if len(tokens) == 1 and _WORD_RE.fullmatch(tokens[0]):
        return int(tokens[0], 16).to_bytes(8, "little")
    raise ConformanceError(f"{where}: expected 8 hex bytes or one 0x 64-bit word, got {line!r}")


def parse_case(text: str, name: str) -> ConformanceCase:
    """The test in `text` (the contents of file `name`); see the module docstring."""
    sections: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    current: list[str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{name}:{number}"
        if line.startswith("--"):
            section = line[2:].strip()
            if section not in _SECTIONS:
                raise ConformanceError(f"{where}: unknown section {line!r}")
            if section in sections:
                raise ConformanceError(f"{where}: repeated section {line!r}")
            current = sections[section] = []
            first_line[section] = number + 1
        elif current is not None:
            current.append(line)
        elif line.strip() and not line.startswith("#"):
            raise ConformanceError(f"{where}: text before the first section: {line!r}")

    def data(section: str) -> list[tuple[str, str]]:
        """(location, stripped line) of the section's lines that are not blank or comments."""
        lines = sections.get(section, [])
        return [
            (f"{name}:{first_line[section] + offset}", line.strip())
            for offset, line in enumerate(lines)
            if line.strip() and not line.lstrip().startswith("#")
        ]

    def verbatim(section: str) -> str | None:
        return "\n".join(sections[section]) + "\n" if section in sections else None

    raw = b"".join(_raw_line(line, where) for where, line in data("raw"))
    mem = b"".join(_hex_bytes(tok, where) for where, line in data("mem") for tok in line.split())
    results = data("result")
    if len(results) > 1 or any(_RESULT_RE.fullmatch(line) is None for _, line in results):
        raise ConformanceError(f"{name}: -- result must be one hex or decimal number: {results}")
    return ConformanceCase(
        name=name,
        asm=verbatim("asm"),
        raw=raw if "raw" in sections else None,
        mem=mem,
        result=int(results[0][1], 16 if results[0][1][:2] in ("0x", "0X") else 10)
        if results
        else None,
        error=" ".join(line for _, line in data("error")) if "error" in sections else None,
        flags=frozenset(sections) & _FLAGS,
        c_source=verbatim("c"),
        asm_line=first_line.get("asm"),
    )


def load_case(path: Path) -> ConformanceCase:
    """The test in file `path`, named by its stem."""
    return parse_case(path.read_text(encoding="utf-8"), path.stem)


def load_cases(directory: Path) -> list[ConformanceCase]:
    """Every ``*.data`` test in `directory`, sorted by file name."""
    return [load_case(path) for path in sorted(directory.glob("*.data"))]
