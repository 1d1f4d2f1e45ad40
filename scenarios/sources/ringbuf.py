"""A BPF ring buffer fed by bpf_ringbuf_output from a raw tracepoint program run with
BPF_PROG_TEST_RUN, consumed through its two mappings."""

from kernelsim.strategies import ProgramRingBufWriter

writer = ProgramRingBufWriter(4096, max_payload=64)
try:
    for n in range(5):
        writer.output(bytes([n + 1]) * (n * 8 + 3))
    print("records:", [len(r) for r in writer.ringbuf.records()])
    writer.output(b"late")
    print("then:", list(writer.ringbuf.records()))
finally:
    writer.close()
