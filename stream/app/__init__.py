"""What people run: the `stream` command, its wiring to Kafka and Dask, and its tools."""
