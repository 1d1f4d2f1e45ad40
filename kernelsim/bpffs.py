"""bpffs mounts and OBJ_PIN / OBJ_GET."""
