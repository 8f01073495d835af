"""The Confluent wire-format codec against the real registry client library, and a real registry.

The `registry` fixture runs each test twice: against Apicurio Registry (a real registry from
Maven Central, Confluent's API under /apis/ccompat/v7; `make registry` fetches it), and
against a small in-test HTTP server of the two REST calls the codec uses (`POST
/subjects/{s}/versions`, `GET /schemas/ids/{id}`), which also counts the requests and can
demand TLS and basic auth. Everything else is the real confluent_kafka.schema_registry client.
"""

import json
import os
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stream.codecs.registry import RegistryAvroCodec
from stream.errors import DecodeError

V1 = {"type": "record", "name": "Pay", "fields": [{"name": "user", "type": "string"},
                                                   {"name": "amount", "type": "double"}]}
V2 = {"type": "record", "name": "Pay", "fields": V1["fields"] + [
    {"name": "country", "type": "string", "default": "DE"}]}
INCOMPATIBLE = {"type": "record", "name": "Pay", "fields": [{"name": "user", "type": "long"}]}


def serve_registry(tls=None, basic_auth: str | None = None):
    """(server, url, requests): the two REST calls, over TLS with `tls` (a server SSLContext),
    answering 401 unless the request carries `basic_auth` ("user:password")."""
    import base64

    schemas: dict[int, str] = {}
    requests: list[str] = []
    expected = None if basic_auth is None else "Basic " + base64.b64encode(basic_auth.encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def handle_one_request(self):
            try:
                super().handle_one_request()
            except OSError:  # a client that refused the certificate
                self.close_connection = True

        def parse_request(self):
            if not super().parse_request():
                return False
            if expected is not None and self.headers.get("Authorization") != expected:
                requests.append(f"401 {self.path}")
                self._send(401, {"error_code": 401, "message": "Unauthorized"})
                return False
            return True

        def _send(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            requests.append(f"POST {self.path}")
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            sid = next((i for i, s in schemas.items() if s == body["schema"]), len(schemas) + 1)
            schemas[sid] = body["schema"]
            self._send(200, {"id": sid})

        def do_GET(self):
            requests.append(f"GET {self.path}")
            sid = int(self.path.split("?")[0].rsplit("/", 1)[1])
            if sid not in schemas:
                return self._send(404, {"error_code": 40403, "message": "Schema not found"})
            self._send(200, {"schema": schemas[sid], "schemaType": "AVRO"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if tls is not None else "http"
    return server, f"{scheme}://127.0.0.1:{server.server_port}", requests


@pytest.fixture(scope="session")
def apicurio():
    """Apicurio Registry for the session; skipped when not fetched (required in CI)."""
    from stream.app.broker import BrokerNotFound
    from stream.app.registry_server import ApicurioRegistry

    try:
        server = ApicurioRegistry().start()
    except BrokerNotFound as exc:
        if os.environ.get("STREAM_REQUIRE_KAFKA"):  # .ci/run fetches it with Kafka's jars
            raise
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(params=["apicurio", "in-test"])
def registry(request):
    """(url, requests): `requests` lists the calls the in-test server saw; None on Apicurio."""
    if request.param == "apicurio":
        yield request.getfixturevalue("apicurio").url, None
        return
    server, url, requests = serve_registry()
    yield url, requests
    server.shutdown()


def test_basic_auth_over_tls_with_the_password_never_shown(tmp_path):
    import ssl

    trustme = pytest.importorskip("trustme")
    from stream.codecs.registry import RegistrySecurity
    from stream.errors import StreamError
    from stream.pipeline import Pipeline

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server, url, requests = serve_registry(context, "app:Regi5try-Pw")
    try:
        good = RegistrySecurity("app", "Regi5try-Pw", ssl_ca_location=str(ca_file))
        codec = Pipeline("r").source("t", schema=V1, registry_url=url, registry_security=good).source_spec.codec
        data = codec.encode({"user": "u", "amount": 1.0})
        assert RegistryAvroCodec(url, V1, settings=good.settings()).decode(data)["user"] == "u"
        assert "Regi5try-Pw" not in repr(codec) + repr(good) + repr(good.settings())
        bad = RegistrySecurity("app", "wrong-Pw-123", ssl_ca_location=str(ca_file))
        with pytest.raises(StreamError) as info:
            RegistryAvroCodec(url, V1, settings=bad.settings(), retry_s=1).decode(data)
        assert "refused the credentials" in str(info.value) and "wrong-Pw-123" not in str(info.value)
        assert any(r.startswith("401") for r in requests)
        untrusted = RegistrySecurity("app", "Regi5try-Pw")  # no CA: the test CA is not trusted
        with pytest.raises(StreamError, match="unreachable.*TLS"):
            RegistryAvroCodec(url, V1, settings=untrusted.settings(), retry_s=1).decode(data)
    finally:
        server.shutdown()


def test_round_trip_and_writer_schema_cached(registry):
    url, requests = registry
    codec = RegistryAvroCodec(url, V1, subject="pay-value")
    data = codec.encode({"user": "u1", "amount": 2.5})
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") >= 1
    fresh = RegistryAvroCodec(url, V1, subject="pay-value")
    assert [fresh.decode(data) for _ in range(3)] == [{"user": "u1", "amount": 2.5}] * 3
    if requests is not None:
        assert sum(r.startswith("GET") for r in requests) == 1


def test_a_schema_evolves_under_one_subject_and_both_versions_decode(registry):
    url, _ = registry
    subject = f"evolving-{uuid.uuid4().hex[:8]}"
    old = RegistryAvroCodec(url, V1, subject=subject).encode({"user": "u1", "amount": 1.0})
    new = RegistryAvroCodec(url, V2, subject=subject).encode({"user": "u2", "amount": 2.0, "country": "FR"})
    assert old[1:5] != new[1:5]  # two versions, two schema ids
    reader = RegistryAvroCodec(url, V1, subject=subject)  # an old reader drops the new field
    assert [reader.decode(d) for d in (old, new)] == [{"user": "u1", "amount": 1.0}, {"user": "u2", "amount": 2.0}]


def test_added_field_with_default_is_resolved(registry):
    url, _ = registry
    old = RegistryAvroCodec(url, V1, subject="pay-value").encode({"user": "u1", "amount": 1.0})
    assert RegistryAvroCodec(url, V2, subject="pay-value").decode(old) == {"user": "u1", "amount": 1.0, "country": "DE"}


@pytest.mark.parametrize("data,reason", [(b"\x01\x00\x00\x00\x01abc", "bad_magic_byte"), (b"\x00", "bad_magic_byte"),
                                         (b"\x00\x00\x00\x00\x63abc", "unknown_schema_id")])
def test_bad_framing_and_unknown_ids_are_decode_errors(registry, data, reason):
    url, _ = registry
    with pytest.raises(DecodeError) as exc:
        RegistryAvroCodec(url, V1).decode(data)
    assert exc.value.reason == reason


def test_incompatible_writer_is_a_decode_error(registry):
    url, _ = registry
    data = RegistryAvroCodec(url, INCOMPATIBLE, subject="other").encode({"user": 5})
    with pytest.raises(DecodeError) as exc:
        RegistryAvroCodec(url, V1).decode(data)
    assert exc.value.reason == "decode_failed"


def test_pipeline_source_uses_registry_when_url_given(registry):
    from stream.pipeline import Pipeline

    url, _ = registry
    p = Pipeline("r").source("t", schema=V1, registry_url=url)
    assert isinstance(p.source_spec.codec, RegistryAvroCodec)


def test_unreachable_registry_is_retried_with_backoff_not_dead_lettered(registry):
    import socket
    import time

    url, _ = registry
    writer = RegistryAvroCodec(url, V1)
    data = writer.encode({"user": "a", "amount": 1.0})
    with socket.socket() as s:  # a port where nothing listens, for a while
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    c = RegistryAvroCodec(dead, V1, retry_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        c.decode(data)
    assert not isinstance(info.value, DecodeError)  # not a dead letter: the task fails and is retried
    assert "unreachable" in str(info.value) and dead in str(info.value)
    assert time.monotonic() - t0 >= 0.7             # it retried with backoff first
