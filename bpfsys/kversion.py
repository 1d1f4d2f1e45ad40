"""`KernelVersion`: a Linux release as (major, minor), ordered, parsed from "5.15" or "6.1.0"."""

from __future__ import annotations

import re

import attrs

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)")


@attrs.frozen(order=True)
class KernelVersion:
    """A kernel release; compares by (major, minor)."""

    major: int = attrs.field(validator=attrs.validators.ge(0))
    minor: int = attrs.field(validator=attrs.validators.ge(0))

    @classmethod
    def parse(cls, text: str) -> KernelVersion:
        """Parse "6.1", "5.15.0-91-generic" or "6.18.44-fc"; ValueError otherwise."""
        match = _VERSION_RE.match(text.strip())
        if match is None:
            raise ValueError(f"not a kernel version: {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def from_code(cls, code: int) -> KernelVersion:
        """From LINUX_VERSION_CODE ((major << 16) | (minor << 8) | patch)."""
        return cls(code >> 16, (code >> 8) & 0xFF)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


def since(text: str) -> KernelVersion:
    """Shorthand used by the ABI annotations: `since("5.7")`."""
    return KernelVersion.parse(text)


def to_version(value: str | KernelVersion) -> KernelVersion:
    """`value` itself when it is a KernelVersion, else parsed (an attrs converter)."""
    return value if isinstance(value, KernelVersion) else KernelVersion.parse(value)
