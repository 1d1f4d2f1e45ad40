"""A program the loader refuses, with its log: the load without a log, the retry with one."""

from bpfsys import bpf
from bpfsys.abi import ProgType
from bpfsys.asm import assemble_text

BAD = "mov64 %r0, %r1\nldxdw %r0, [%r2+0]\nexit"  # r2 is never set
UNREACHABLE = "mov64 %r0, 0\nexit\nmov64 %r0, 1\nexit"  # dead code

for source in (BAD, UNREACHABLE):
    try:
        bpf.prog_load(ProgType.SOCKET_FILTER, assemble_text(source)).close()
    except bpf.VerifierError as exc:
        print(f"errno {exc.errno}; log ends: {exc.log.strip().splitlines()[-1]!r}")
with bpf.prog_load(ProgType.SOCKET_FILTER, assemble_text("mov64 %r0, 0\nexit")) as ok:
    print("a good program loads:", ok.fileno() > 0)
