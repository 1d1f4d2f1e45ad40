"""bpf() PROG_LOAD: the loader check and the program object."""
