"""The pipeline's windows, computed on the embedded broker with the Dask executor, against the
same windows computed by an independent engine (DuckDB SQL) over the generated records;
very late copies of some records, sent after them, must be on the late topic, never counted."""

from __future__ import annotations

import math

import pytest
from helpers import payment_pipeline, session_pipeline
from payments import produce_into, read_windows, run_to_end

from stream.app.admin import ensure_topic
from stream.config import RunConfig

duckdb = pytest.importorskip("duckdb")
pytestmark = [pytest.mark.kafka, pytest.mark.slow]
FIELDS = ("n", "total", "low", "high", "mean")


def _load(records: list[dict]):
    con = duckdb.connect()
    con.execute("CREATE TABLE p (user_id VARCHAR, amount DOUBLE, ts BIGINT)")
    con.executemany("INSERT INTO p VALUES (?, ?, ?)", [(r["user_id"], r["amount"], r["ts"]) for r in records])
    return con


def sql_windows(records: list[dict], size_ms: int, slide_ms: int) -> dict[tuple[str, int], dict]:
    """Hopping windows (tumbling when size == slide) in SQL: each record joins the
    size/slide windows that contain it; a window is [start, start + size)."""
    rows = _load(records).execute(f"""
        SELECT user_id, ts - ts % {slide_ms} - j * {slide_ms} AS window_start,
               count(*), sum(amount), min(amount), max(amount), avg(amount)
        FROM p, range(0, {size_ms // slide_ms}) AS t(j)
        WHERE amount > 0
        GROUP BY ALL""").fetchall()
    return {(u, ws): dict(zip(FIELDS, vals)) for u, ws, *vals in rows}


def sql_sessions(records: list[dict], gap_ms: int) -> dict[tuple[str, int], dict]:
    """Sessions in SQL (gaps and islands): a record starts a new session when it comes
    `gap_ms` or more after the user's previous record; a session ends gap_ms after its last."""
    rows = _load(records).execute(f"""
        WITH marked AS (
            SELECT *, CASE WHEN ts - lag(ts) OVER (PARTITION BY user_id ORDER BY ts) < {gap_ms}
                           THEN 0 ELSE 1 END AS starts
            FROM p WHERE amount > 0),
        numbered AS (
            SELECT *, sum(starts) OVER (PARTITION BY user_id ORDER BY ts, starts DESC
                                        ROWS UNBOUNDED PRECEDING) AS session
            FROM marked)
        SELECT user_id, min(ts), max(ts) + {gap_ms},
               count(*), sum(amount), min(amount), max(amount), avg(amount)
        FROM numbered GROUP BY user_id, session""").fetchall()
    return {(u, start): {"window_end": end, **dict(zip(FIELDS, vals))} for u, start, end, *vals in rows}


def produce_very_late(kafka, topic, records: list[dict], every: int = 500) -> list[dict]:
    """After the input, a copy of every `every`-th record an hour older, on the same
    partition: late on that partition whatever else it holds."""
    from confluent_kafka import Producer

    from stream.app.generator import partition_of

    codec = payment_pipeline("x", topic, "o").source_spec.codec
    late = [dict(r, payment_id=f"late-{r['payment_id']}", ts=r["ts"] - 3_600_000) for r in records[::every]]
    p = Producer(kafka.producer())
    for r in late:
        p.produce(topic, codec.encode(r), r["user_id"].encode(), partition=partition_of(r["user_id"], 4))
    assert p.flush(30) == 0
    return late


def run_and_read(kafka, pipeline, executor, records: list[dict], out: str, late: list[dict]) -> list[dict]:
    """Run the pipeline over every record on the broker, closing all windows; its results.
    The `late` records must be on the late topic, each once, and counted nowhere."""
    from stream.sources.kafka import read_all

    config = RunConfig(app_id=pipeline.name, kafka=kafka, commit_interval_s=0.2, range_records=3_000)
    stats = run_to_end(pipeline, config, executor, records + late)
    assert stats.late == len(late) and stats.failed == 0
    codec = payment_pipeline("x", "in", "o").source_spec.codec
    seen = [codec.decode(m.value)["payment_id"]
            for m in read_all(kafka.consumer({"group.id": "verify"}), config.late_topic, 0)]
    assert sorted(seen) == sorted(r["payment_id"] for r in late)
    return read_windows(kafka, out)


def compare(sql: dict, rows: list[dict]) -> list[str]:
    got = {(r["user_id"], r["window_start"]): r for r in rows}
    problems = [f"missing {k}" for k in sql if k not in got] + [f"extra {k}" for k in got if k not in sql]
    if len(got) != len(rows):
        problems.append(f"{len(rows) - len(got)} duplicate windows")
    for k in sql.keys() & got.keys():
        for f in FIELDS + (("window_end",) if "window_end" in sql[k] else ()):
            if not math.isclose(got[k][f], sql[k][f], rel_tol=1e-9, abs_tol=1e-6):
                problems.append(f"{k} {f}: pipeline {got[k][f]}, SQL {sql[k][f]}")
    return problems


@pytest.mark.parametrize("size_ms,slide_ms", [(10_000, 10_000), (10_000, 2_500)], ids=["tumbling", "hopping"])
def test_windows_equal_duckdb_window_by_window(kafka, topic_name, dask_executor, size_ms, slide_ms):
    src, out = topic_name("in"), topic_name("out")
    ensure_topic(kafka.client(), src, 4)
    ensure_topic(kafka.client(), out, 2)
    records = produce_into(kafka, src, 20_000, seed=23)
    late = produce_very_late(kafka, src, records)
    pipeline = payment_pipeline(topic_name("app"), src, out, size_ms=size_ms,
                                slide_ms=None if size_ms == slide_ms else slide_ms, last=False)
    rows = run_and_read(kafka, pipeline, dask_executor, records, out, late)
    expected = sql_windows(records, size_ms, slide_ms)
    assert len(expected) > 1_000
    assert compare(expected, rows) == []


def test_sessions_equal_duckdb_session_by_session(kafka, topic_name, dask_executor):
    src, out = topic_name("in"), topic_name("out")
    ensure_topic(kafka.client(), src, 4)
    ensure_topic(kafka.client(), out, 2)
    records = produce_into(kafka, src, 20_000, seed=29)
    late = produce_very_late(kafka, src, records)
    gap = 1_500  # users pay every 1.2 s on average: sessions of very different lengths
    pipeline = session_pipeline(topic_name("app"), src, out, gap_ms=gap, grace_ms=4_000)
    rows = run_and_read(kafka, pipeline, dask_executor, records, out, late)
    expected = sql_sessions(records, gap)
    assert len(expected) > 1_000 and max(v["n"] for v in expected.values()) > 5
    assert compare(expected, rows) == []
