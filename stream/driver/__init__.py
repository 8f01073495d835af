"""The driver: the I/O-free decision core, range scheduling, checkpoints, and the loop."""
