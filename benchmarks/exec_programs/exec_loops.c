// The native side of benchmarks/bench_exec.py.
//
// usage: exec_loops LOOKUPS
// 1. LOOKUPS BPF_MAP_LOOKUP_ELEM calls on an array map, timed: prints "lookups N SECONDS";
// 2. a BPF_MAP_TYPE_RINGBUF map, its consumer page mapped read-write and its producer page and
//    data mapped read-only (as libbpf maps them); prints "ring ready", waits for a line on stdin
//    (the benchmark makes the simulated kernel write records meanwhile), then consumes every
//    record by reading the mapping and advancing consumer_pos, with no system call: prints
//    "ring RECORDS BYTES SECONDS".
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define RING_SIZE (1 << 20)
#define BUSY_BIT (1U << 31)
#define DISCARD_BIT (1U << 30)
#define HDR_SIZE 8

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int map_create(int type, int key_size, int value_size, int entries)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.map_type = type;
	attr.key_size = key_size;
	attr.value_size = value_size;
	attr.max_entries = entries;
	return sys_bpf(BPF_MAP_CREATE, &attr);
}

static int lookups(long count)
{
	union bpf_attr attr;
	uint32_t key = 0;
	uint64_t value = 0;
	int fd = map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 1);
	double start;

	if (fd < 0) {
		perror("map create");
		return 1;
	}
	memset(&attr, 0, sizeof(attr));
	attr.map_fd = fd;
	attr.key = (uintptr_t)&key;
	attr.value = (uintptr_t)&value;
	start = now();
	for (long i = 0; i < count; i++) {
		if (sys_bpf(BPF_MAP_LOOKUP_ELEM, &attr)) {
			perror("lookup");
			return 1;
		}
	}
	printf("lookups %ld %.6f\n", count, now() - start);
	close(fd);
	return 0;
}

static int ring(void)
{
	long page = sysconf(_SC_PAGESIZE), records = 0, bytes = 0;
	int fd = map_create(BPF_MAP_TYPE_RINGBUF, 0, 0, RING_SIZE);
	volatile uint64_t *consumer, *producer;
	char line[16], *data;
	uint64_t pos;
	double start;

	if (fd < 0) {
		perror("ringbuf create");
		return 1;
	}
	consumer = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	producer = mmap(NULL, page + 2 * RING_SIZE, PROT_READ, MAP_SHARED, fd, page);
	if (consumer == MAP_FAILED || producer == MAP_FAILED) {
		perror("ringbuf mmap");
		return 1;
	}
	data = (char *)producer + page;
	printf("ring ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 2;
	start = now();
	pos = *consumer;
	while (pos < __atomic_load_n(producer, __ATOMIC_ACQUIRE)) {
		uint32_t len = __atomic_load_n((uint32_t *)(data + (pos & (RING_SIZE - 1))),
					       __ATOMIC_ACQUIRE);
		if (len & BUSY_BIT)
			break;
		if (!(len & DISCARD_BIT)) {
			records++;
			bytes += len;
		}
		pos += (HDR_SIZE + (len & ~(BUSY_BIT | DISCARD_BIT)) + 7) & ~7UL;
		__atomic_store_n(consumer, pos, __ATOMIC_RELEASE);
	}
	printf("ring %ld %ld %.6f\n", records, bytes, now() - start);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (lookups(strtol(argv[1], NULL, 0)))
		return 1;
	return ring();
}
