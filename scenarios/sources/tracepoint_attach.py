"""A tracepoint program attached to syscalls/sys_enter_getpid by bpf_link, then by ioctl
(PERF_EVENT_IOC_SET_BPF + ENABLE), and detached."""

from bpfsys import bpf
from bpfsys.abi import ProgType
from bpfsys.asm import assemble_text
from bpfsys.attach import PerfAttachMethod, attach_tracepoint

with bpf.prog_load(ProgType.TRACEPOINT, assemble_text("mov64 %r0, 0\nexit"), name="tp") as prog:
    for method in (PerfAttachMethod.LINK, PerfAttachMethod.IOCTL):
        with attach_tracepoint(prog, "syscalls", "sys_enter_getpid", method=method) as attached:
            print(method.value, "attached:", attached.method.value)
