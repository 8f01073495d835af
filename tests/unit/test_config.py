import pytest

from stream.config import KafkaConfig, RunConfig
from stream.errors import ConfigError


@pytest.mark.parametrize("kw, setting", [
    ({"guarantee": "exactly-once"}, "guarantee"),
    ({"replica": 1000}, "replica"),
    ({"step_timeout_s": 0}, "step_timeout_s"),
    ({"max_future_ms": -1}, "max_future_ms"),
    ({"app_id": ""}, "app_id"),
    ({"app_id": "has space"}, "app_id"),
    ({"range_records": 1.5}, "range_records"),
    ({"workers": True}, "workers"),
    ({"commit_interval_s": "1"}, "commit_interval_s"),
    ({"metrics_addr": "not an addr"}, "metrics_addr"),
])
def test_a_bad_setting_fails_at_start_naming_it(kw, setting):
    with pytest.raises(ConfigError) as info:
        RunConfig(kafka=KafkaConfig("h:1"), **{"app_id": "a", **kw})
    assert info.value.setting == setting and setting in str(info.value)


def test_max_record_bytes_must_fit_the_dead_letter_topic():
    with pytest.raises(ConfigError, match="max_record_bytes"):
        KafkaConfig("h:1", max_record_bytes=10**9)


def test_transactional_id_is_stable_per_application_and_replica():
    c = RunConfig(app_id="spend", kafka=KafkaConfig("h:1"), replica=2)
    assert c.transactional_id == "spend.2" and c.exactly_once
    assert (c.changelog_topic, c.dead_letter_topic, c.late_topic) == (
        "spend.changelog", "spend.dlq", "spend.late")
