"""kernelsim exec: native programs against the simulated kernel through seccomp user
notification (docs/exec.md). `ExecSession` runs one; `kernelsim exec` is its command line."""

from kernelsim.exec.launch import ExecRefused
from kernelsim.exec.session import ExecSession

__all__ = ["ExecRefused", "ExecSession"]
