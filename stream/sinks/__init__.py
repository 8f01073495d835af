"""Sinks: the Kafka producer side and its in-memory twin."""
