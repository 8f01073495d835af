"""Sources: a Kafka source and its in-memory twin behind the same protocols."""
