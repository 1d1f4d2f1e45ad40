// The user side of events.bpf.c: load and attach it with libbpf, then report what arrives
// through perf_buffer__poll and ring_buffer__poll.
//
// usage: events OBJECT TARGET_TGID PERF_PAGES
// Protocol on stdin/stdout (one line each): prints "ready"; reads "burst N" (N events were
// fired meanwhile, none consumed); drains both rings, prints "drained ..."; reads "trailer"
// (one more event was fired, so that the perf ring reports what it dropped); prints the final
// counts and exits 0.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

struct event {
	unsigned int seq;
	unsigned int tgid;
};

#define MAX_SEQ 100000
static unsigned char perf_seen[MAX_SEQ], ring_seen[MAX_SEQ];
static long perf_received, perf_lost, ring_received, duplicates, out_of_order;
static long last_perf_seq = -1, last_ring_seq = -1;

static void note(unsigned char *seen, long *last, unsigned int seq)
{
	if (seq >= MAX_SEQ)
		return;
	if (seen[seq])
		duplicates++;
	seen[seq] = 1;
	if ((long)seq < *last)
		out_of_order++;
	*last = seq;
}

static void on_perf_sample(void *ctx, int cpu, void *data, __u32 size)
{
	struct event *e = data;

	if (size < sizeof(*e))
		return;
	perf_received++;
	note(perf_seen, &last_perf_seq, e->seq);
}

static void on_perf_lost(void *ctx, int cpu, __u64 count)
{
	perf_lost += count;
}

static int on_ring_sample(void *ctx, void *data, size_t size)
{
	struct event *e = data;

	if (size < sizeof(*e))
		return 0;
	ring_received++;
	note(ring_seen, &last_ring_seq, e->seq);
	return 0;
}

static long ranges(const unsigned char *seen, long upto, char *out, size_t room)
{
	long count = 0, start = -1;
	size_t used = 0;

	out[0] = 0;
	for (long i = 0; i <= upto; i++) {
		int in = i < upto && i < MAX_SEQ && seen[i];
		if (in && start < 0)
			start = i;
		if (!in && start >= 0) {
			used += snprintf(out + used, room > used ? room - used : 0, "%s%ld-%ld",
					 count ? "," : "", start, i - 1);
			count++;
			start = -1;
		}
	}
	return count;
}

static int drain(struct perf_buffer *pb, struct ring_buffer *rb, long want_perf, long want_ring,
		 unsigned int *drops_key, int state_fd)
{
	for (int round = 0; round < 200; round++) {
		unsigned int ring_drops = 0;

		if (perf_buffer__poll(pb, 20) < 0 || ring_buffer__poll(rb, 20) < 0)
			return -1;
		bpf_map_lookup_elem(state_fd, drops_key, &ring_drops);
		if (perf_received + perf_lost >= want_perf && ring_received + ring_drops >= want_ring)
			return 0;
	}
	return -1;
}

int main(int argc, char **argv)
{
	char line[64], perf_ranges[256], ring_ranges[256];
	unsigned int target, key, ring_drops = 0, drops_key = 2;
	struct perf_buffer *pb;
	struct ring_buffer *rb;
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_link *link;
	long burst;
	int state_fd;

	if (argc != 4) {
		fprintf(stderr, "usage: %s OBJECT TARGET_TGID PERF_PAGES\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || bpf_object__load(obj)) {
		fprintf(stderr, "load failed: %s\n", strerror(errno));
		return 1;
	}
	state_fd = bpf_object__find_map_fd_by_name(obj, "state");
	target = strtoul(argv[2], NULL, 0);
	key = 0;
	if (bpf_map_update_elem(state_fd, &key, &target, BPF_ANY)) {
		fprintf(stderr, "update failed: %s\n", strerror(errno));
		return 1;
	}
	prog = bpf_object__find_program_by_name(obj, "on_getpid");
	link = bpf_program__attach(prog);
	if (!link) {
		fprintf(stderr, "attach failed: %s\n", strerror(errno));
		return 1;
	}
	pb = perf_buffer__new(bpf_object__find_map_fd_by_name(obj, "perf_events"),
			      strtoul(argv[3], NULL, 0), on_perf_sample, on_perf_lost, NULL, NULL);
	rb = ring_buffer__new(bpf_object__find_map_fd_by_name(obj, "ring"), on_ring_sample, NULL,
			      NULL);
	if (!pb || !rb) {
		fprintf(stderr, "buffers failed: %s\n", strerror(errno));
		return 1;
	}
	printf("ready\n");
	if (!fgets(line, sizeof(line), stdin) || sscanf(line, "burst %ld", &burst) != 1)
		return 2;
	if (drain(pb, rb, 0, burst, &drops_key, state_fd)) {
		fprintf(stderr, "ring drain timed out\n");
		return 1;
	}
	/* the perf ring reports its drops only with the next record that fits */
	for (int round = 0; round < 10; round++)
		perf_buffer__poll(pb, 10);
	printf("drained perf %ld ring %ld\n", perf_received, ring_received);
	if (!fgets(line, sizeof(line), stdin) || strncmp(line, "trailer", 7))
		return 2;
	if (drain(pb, rb, burst + 1, burst + 1, &drops_key, state_fd)) {
		fprintf(stderr, "trailer drain timed out: perf %ld+%ld ring %ld\n", perf_received,
			perf_lost, ring_received);
		return 1;
	}
	bpf_map_lookup_elem(state_fd, &drops_key, &ring_drops);
	ranges(perf_seen, burst + 1, perf_ranges, sizeof(perf_ranges));
	ranges(ring_seen, burst + 1, ring_ranges, sizeof(ring_ranges));
	printf("perf received %ld lost %ld seqs %s\n", perf_received, perf_lost, perf_ranges);
	printf("ring received %ld dropped %u seqs %s\n", ring_received, ring_drops, ring_ranges);
	printf("duplicates %ld out_of_order %ld\n", duplicates, out_of_order);
	perf_buffer__free(pb);
	ring_buffer__free(rb);
	bpf_link__destroy(link);
	bpf_object__close(obj);
	return 0;
}
