// A tracepoint program for the kernelsim exec tests: every call of getpid by the target
// process (any process when the target is 0) sends one event through a perf event array and
// one through a ring buffer, numbered in firing order.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct event {
	__u32 seq;
	__u32 tgid;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} ring SEC(".maps");

enum { TARGET, NEXT_SEQ, RING_DROPS, N_SLOTS };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, N_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} state SEC(".maps");

static __u32 *slot(__u32 key)
{
	return bpf_map_lookup_elem(&state, &key);
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int on_getpid(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 *target = slot(TARGET), *next = slot(NEXT_SEQ), *drops = slot(RING_DROPS);
	struct event e = {.tgid = tgid};

	if (!target || !next || !drops)
		return 0;
	if (*target && *target != tgid)
		return 0;
	e.seq = *next;
	*next = e.seq + 1;
	bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	if (bpf_ringbuf_output(&ring, &e, sizeof(e), 0))
		__sync_fetch_and_add(drops, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
