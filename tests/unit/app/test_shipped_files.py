"""The files the runtime reads from the repository are where it looks for them."""

from stream.app import kafka_broker, registry_server
from stream.codecs import schemas
from stream.metrics import STATUS_PAGE


def test_the_broker_and_registry_pins_are_found():
    assert (kafka_broker.DEPLOY / "jars.sha256").is_file()
    assert (kafka_broker.DEPLOY / "pom.xml").is_file()
    assert (registry_server.DEPLOY / "archive.sha256").is_file()
    assert (registry_server.DEPLOY / "pom.xml").is_file()


def test_the_shipped_schemas_and_the_status_page_are_found():
    assert (schemas.SHIPPED / "payment.avsc").is_file()
    assert STATUS_PAGE.is_file()
