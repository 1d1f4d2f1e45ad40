"""bpf() PROG_TEST_RUN: running a program on given data and context."""
