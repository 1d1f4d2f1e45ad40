"""Generate kernelsim/perf/tracepoint_table.py from the live tracefs (run as root on the live kernel)."""
import os, re, sys
T = "/sys/kernel/tracing/events"
SYSCALLS = "getpid getppid gettid getuid getpgid openat read write close execve clone mmap munmap bpf perf_event_open nanosleep clock_nanosleep exit_group kill ioctl connect accept4 sendto recvfrom futex unlinkat newfstatat newuname brk".split()
EVENTS = """raw_syscalls/sys_enter raw_syscalls/sys_exit sched/sched_switch sched/sched_process_exec sched/sched_process_exit
sched/sched_process_fork sched/sched_process_free sched/sched_wakeup sched/sched_wakeup_new irq/irq_handler_entry
irq/irq_handler_exit irq/softirq_entry irq/softirq_exit irq/softirq_raise signal/signal_generate signal/signal_deliver
task/task_newtask task/task_rename timer/timer_start net/netif_receive_skb net/net_dev_xmit skb/consume_skb kmem/kfree
sock/inet_sock_set_state tcp/tcp_retransmit_skb bpf_trace/bpf_trace_printk""".split()
FIELD = re.compile(r"\tfield:(.*);\toffset:(\d+);\tsize:(\d+);\tsigned:(\d);")
def parse(path):
    text = open(path).read()
    name = re.search(r"^name: (.*)$", text, re.M).group(1)
    eid = int(re.search(r"^ID: (\d+)$", text, re.M).group(1))
    fields = [(m.group(1), int(m.group(2)), int(m.group(3)), m.group(4) == "1") for m in FIELD.finditer(text)]
    fmt = re.search(r"^print fmt: (.*)$", text, re.M).group(1)
    return name, eid, fields[4:], fmt, text
out = ['# ruff: noqa: E501', '"""Tracepoints of the simulated kernel: data copied from the live tracefs (Linux 6.18, x86_64).',
       '',
       'Generated from /sys/kernel/tracing/events/*/*/format on the live kernel; every entry keeps the',
       'field layout (declaration, offset, size, signedness) and print fmt of that kernel, and its id.',
       'Syscall events are listed by their arguments: their formats follow one rule (kernel/trace/',
       'trace_syscalls.c) that `kernelsim.perf.trace_event` applies. The four common fields are implied.',
       '"""', '', 'from __future__ import annotations', '', 'from typing import Final', '',
       'FieldSpec = tuple[str, int, int, bool]', '"""(declaration, offset, size, signed) of one format field."""', '',
       'TRACEPOINTS: Final[tuple[tuple[str, str, int, tuple[FieldSpec, ...], str], ...]] = (']
for ev in EVENTS:
    system, name = ev.split("/")
    n, eid, fields, fmt, _ = parse(f"{T}/{ev}/format")
    out.append(f"    (\n        {system!r},\n        {name!r},\n        {eid},\n        (")
    for f in fields:
        out.append(f"            {f!r},")
    out.append(f"        ),\n        {fmt!r},\n    ),")
out.append(")")
out.append('"""(system, name, id, fields after the common ones, print fmt)."""')
out.append("")
out.append("SYSCALLS: Final[tuple[tuple[str, int, int, tuple[tuple[str, str], ...]], ...]] = (")
for sc in SYSCALLS:
    n, enter_id, fields, fmt, text = parse(f"{T}/syscalls/sys_enter_{sc}/format")
    _, exit_id, xf, xfmt, _ = parse(f"{T}/syscalls/sys_exit_{sc}/format")
    args = []
    for decl, off, size, signed in fields[1:]:
        m = re.match(r"^(.*?)\s*([A-Za-z_][A-Za-z0-9_]*)$", decl)
        args.append((m.group(1), m.group(2)))
    out.append(f"    ({sc!r}, {enter_id}, {exit_id}, {tuple(args)!r}),")
out.append(")")
out.append('"""(syscall, sys_enter id, sys_exit id, ((C type, name) of each argument))."""')
src = "\n".join(out) + "\n"
open(sys.argv[1], "w").write(src)
