"""kernelsim: a simulated Linux kernel behind the bpfsys backend protocol.

`SimBackend(Kernel(KernelConfig(version="6.1", cpus=4)))` is a drop-in for
`bpfsys.backend.LiveBackend()`.
"""

from kernelsim.backend import SimBackend
from kernelsim.kernel import Kernel, KernelConfig, Privileges

__all__ = ["Kernel", "KernelConfig", "Privileges", "SimBackend"]
