"""Execution: the range task that workers run, and the executors that run it."""
