"""Codecs: bytes <-> records, following confluent-kafka's serializer contract."""
