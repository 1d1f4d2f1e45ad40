"""A one-page perf buffer on CPU 0 fed by bpf_perf_event_output from a raw tracepoint program
run with BPF_PROG_TEST_RUN until it overflows; the consumer then reads the samples and the
PERF_RECORD_LOST that counts the dropped ones, and the ring takes records again."""

from bpfsys.perf_buffer import PerfBuffer
from bpfsys.perf_records import LostRecord, Sample
from kernelsim.strategies import ProgramPerfWriter

writer = ProgramPerfWriter(4096, cpu=0, max_payload=256)
try:
    written = sum(writer.output(bytes([n]) * 200) for n in range(30))
    print("written:", written, "of 30")
    assert isinstance(writer.buffer, PerfBuffer)
    records = list(writer.buffer.records())
    samples = [r for r in records if isinstance(r, Sample)]
    print("samples read:", len(samples))
    writer.output(b"after")
    records = list(writer.buffer.records())
    lost = sum(r.lost for r in records if isinstance(r, LostRecord))
    print("lost reported:", lost, "then", len([r for r in records if isinstance(r, Sample)]))
finally:
    writer.close()
