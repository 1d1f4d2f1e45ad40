"""bpf programs: the loader check ("verifier"), the program object, the interpreter, helpers."""
