"""Monitoring in SQL: hourly statistics against scikit-learn and numpy, incremental refreshes,
BigQuery compilation, and a judgement that stays safe (sensitive fields, model versions, scale)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import average_precision_score, roc_auc_score
from sqlalchemy import insert, select

from src.agent import DriftSummary, judge, monitor, parse_metrics_lines
from src.agent.observations import MetricPoint
from src.loop.statistics import (
    binned_columns,
    bins_work_mem_mb,
    hour_of,
    refresh,
    statements,
)
from src.loop.tables import (
    downgrade,
    hourly_bins_table,
    hourly_ops_table,
    hourly_quality_table,
    labels_table,
    make_engine,
    requests_table,
)
from src.loop.windows import drift_report, hourly_points
from src.monitor_window import load_references
from src.monitoring.drift import fit_reference
from src.service.factory import create_app
from src.settings import Settings
from tests.conftest import (
    ADULT,
    DATA,
    FEATURES,
    SENSITIVE,
    _postgres_database,
    adult_tables,
    census_layout,
)
from tests.conftest import census_predictions as predictions_table
from tests.conftest import read_adult as load_dataset

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=10)
DELAY = timedelta(hours=24)
REFERENCES = fit_reference(ADULT, load_dataset(DATA / "adult_ref_sample.csv").features)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'stats.db'}"
        made = make_engine(url)
        adult_tables(made)  # the census's columns claimed, as serving claims them
        yield made
        made.dispose()
        return
    for url in _postgres_database():
        made = make_engine(url)
        adult_tables(made)  # the census's columns claimed, as serving claims them
        yield made
        made.dispose()


def _log(
    engine: Any,
    hour: int,
    scores: np.ndarray,
    labels: np.ndarray | None,
    *,
    version: str = "v1",
    latencies: list[float] | None = None,
    statuses: list[int] | None = None,
    extra: dict[str, Any] | None = None,
    first_second: int = 0,
    connection: Any = None,
) -> list[str]:
    """Rows at T0 + `hour` hours (from `first_second` on), as the writer stores them; labels for
    those given. Written in a transaction of their own, or in `connection`'s."""
    ids, predictions, requests = [], [], []
    for i, score in enumerate(scores.tolist()):
        ts = T0 + timedelta(hours=hour, seconds=(first_second + i) % 3600)
        pid = f"{hour_of(ts):012x}{first_second:08x}{i:08x}-00000"
        ids.append(pid)
        row = {"age": float(20 + i % 60), "workclass": "Private", **(extra or {})}
        predictions.append(
            {
                "prediction_id": pid,
                "request_id": "r",
                "row_index": 0,
                "ts": ts,
                "model_version": version,
                **row,
                "probability": score,
                "predicted_class": int(score >= 0.5),
            }
        )
    for i, latency in enumerate(latencies or [1.0] * len(scores)):
        status = (statuses or [200] * len(scores))[i]
        ts = T0 + timedelta(hours=hour, seconds=(first_second + i) % 3600)
        requests.append(
            {
                "request_id": "r",
                "ts": ts,
                "path": "/predict",
                "status": status,
                "latency_ms": latency,
                "rows": 1,
            }
        )
    with contextlib.nullcontext(connection) if connection else engine.begin() as connection:
        if predictions:
            connection.execute(insert(predictions_table), predictions)
        if requests:
            connection.execute(insert(requests_table), requests)
        if labels is not None:
            connection.execute(
                insert(labels_table),
                [
                    {"prediction_id": pid, "label": int(y), "received_at": T0}
                    for pid, y in zip(ids, labels, strict=True)
                ],
            )
    return ids


def _quality(engine: Any) -> dict[int, Any]:
    with engine.connect() as connection:
        return {r.hour - hour_of(T0): r for r in connection.execute(select(hourly_quality_table))}


def test_statistics_match_scikit_learn_and_numpy(engine: Any) -> None:
    rng = np.random.default_rng(0)
    truth = {}
    for hour in range(4):
        scores = np.round(rng.random(400), 2)  # two decimals: many ties
        labels = (rng.random(400) < scores).astype(int)
        if hour == 2:
            labels[:] = 1  # one class only: no ROC-AUC, no PR-AUC
        latencies = rng.gamma(2.0, 30.0, 400).round(3).tolist()
        statuses = [200 if i % 7 else 503 for i in range(400)]
        _log(engine, hour, scores, labels, latencies=latencies, statuses=statuses)
        truth[hour] = (scores, labels, latencies, statuses)
    # hour 4 is empty; hour 5 has traffic and no labels
    _log(engine, 5, rng.random(50), None)
    refresh(engine, REFERENCES, now=NOW, label_delay=DELAY)
    quality = _quality(engine)
    with engine.connect() as connection:
        ops = {r.hour - hour_of(T0): r for r in connection.execute(select(hourly_ops_table))}
    assert sorted(quality) == sorted(ops) == [0, 1, 2, 3, 5]  # the empty hour has no row
    for hour, (scores, labels, latencies, statuses) in truth.items():
        q = quality[hour]
        assert (q.rows, q.labelled, q.positives) == (400, 400, int(labels.sum()))
        assert q.correct == int(((scores >= 0.5).astype(int) == labels).sum())
        if hour == 2:
            assert q.roc_auc is None
            assert q.pr_auc is None
        else:
            assert abs(q.roc_auc - roc_auc_score(labels, scores)) < 1e-9
            assert abs(q.pr_auc - average_precision_score(labels, scores)) < 1e-9
        assert abs(ops[hour].latency_p95_ms - np.percentile(latencies, 95)) < 1e-9
        assert ops[hour].errors == sum(s != 200 for s in statuses)
    assert quality[5].labelled == 0
    assert quality[5].roc_auc is None


def test_statistics_bin_counts_equal_the_drift_modules(engine: Any) -> None:
    sample = load_dataset(DATA / "adult_shifted_sample.csv").features
    rows = sample[list(FEATURES)].to_dict(orient="records")
    with engine.begin() as connection:
        connection.execute(
            insert(predictions_table),
            [
                {
                    "prediction_id": f"{i:028x}-00000",
                    "request_id": "r",
                    "row_index": 0,
                    "ts": T0 + timedelta(seconds=i),
                    "model_version": "v1",
                    **{k: (None if v != v else v) for k, v in row.items()},  # NaN -> NULL
                    "probability": 0.5,
                    "predicted_class": 1,
                }
                for i, row in enumerate(rows)
            ],
        )
    refresh(engine, REFERENCES, now=NOW, label_delay=DELAY)
    report = drift_report(engine, REFERENCES, hours=24, threshold=0.2)
    for name, ref in REFERENCES.items():
        expected, _, _ = ref.count(sample[name])
        with engine.connect() as connection:
            stored = {
                slot: count
                for slot, count in connection.execute(
                    select(hourly_bins_table.c.bin, hourly_bins_table.c.count).where(
                        hourly_bins_table.c.feature == name
                    )
                )
            }
        assert [stored.get(i, 0) for i in range(ref.slots)] == expected.tolist(), name
    assert report["window"]["rows"] == len(sample)


def test_statistics_refresh_only_what_changed_and_late_labels(engine: Any) -> None:
    rng = np.random.default_rng(1)
    ids = {hour: _log(engine, hour, rng.random(300), None) for hour in range(3)}
    first = refresh(engine, REFERENCES, now=NOW, label_delay=DELAY)
    assert first.rebuilt
    assert _quality(engine)[1].labelled == 0
    again = refresh(engine, REFERENCES, now=NOW, label_delay=DELAY)
    # Nothing changed: nothing is computed again.
    assert (again.hours_computed, again.hours_late, again.rebuilt) == (0, 0, False)
    # Labels arrive late for hour 1, a final hour: only that hour is recomputed.
    with engine.begin() as connection:
        connection.execute(
            insert(labels_table),
            [
                {"prediction_id": i, "label": n % 2, "received_at": NOW}
                for n, i in enumerate(ids[1])
            ],
        )
    late = refresh(engine, REFERENCES, now=NOW, label_delay=DELAY)
    assert (late.hours_computed, late.hours_late) == (1, 1)
    # One more hour of traffic, an hour later: that hour only on PostgreSQL (rows are found by
    # the transaction that wrote them: exact); on SQLite hour 1 once more too (labels that
    # arrived within LABEL_OVERLAP before a refresh are looked at twice, so none in flight is
    # missed). One or two hours of 241, not all of them.
    _log(engine, 240, rng.random(100), None)
    later = refresh(engine, REFERENCES, now=NOW + timedelta(hours=1), label_delay=DELAY)
    exact = engine.dialect.name == "postgresql"
    assert (later.hours_computed, later.hours_late) == ((1, 0) if exact else (2, 1))
    assert _quality(engine)[1].labelled == 300
    assert _quality(engine)[0].labelled == 0


def test_statistics_never_count_the_current_hour_and_wait_for_labels(engine: Any) -> None:
    rng = np.random.default_rng(2)
    now = T0 + timedelta(hours=30, minutes=20)
    for hour in (0, 29, 30):  # 30 is the current hour
        scores = rng.random(600)
        _log(engine, hour, scores, (rng.random(600) < scores).astype(int))
    refresh(engine, REFERENCES, now=now, label_delay=DELAY)
    quality = _quality(engine)
    assert 30 not in quality
    assert quality[0].final
    assert not quality[29].final
    points = hourly_points(engine, min_labelled=500)
    by_hour = {datetime.fromisoformat(p["ts"]): p for p in points}
    assert by_hour[T0]["roc_auc"] is not None  # final, enough labels
    late_hour = by_hour[T0 + timedelta(hours=29)]
    assert late_hour["roc_auc"] is None  # labels may still come: no quality point yet
    assert late_hour["latency_p95_ms"] is not None  # operations do not wait for labels
    assert hourly_points(engine, min_labelled=601)[0]["roc_auc"] is None  # too few labelled


@pytest.fixture
def postgresql_engine() -> Iterator[Any]:
    for url in _postgres_database():
        made = make_engine(url)
        adult_tables(made)  # the census's columns claimed, as serving claims them
        yield made
        made.dispose()


def test_statistics_count_a_batch_committed_after_the_refresh(postgresql_engine: Any) -> None:
    """Writer A holds a batch stamped 09:59:59, uncommitted; writer B commits one stamped
    10:00. A refresh runs, then A commits: the next refreshes must count A's row in hour 9
    (they counted 5 of its 6 rows until a --rebuild). PostgreSQL only: SQLite takes one writer
    at a time, and a refresh waits for A to commit."""
    engine = postgresql_engine
    rng = np.random.default_rng(5)
    _log(engine, 9, rng.random(5), None)  # 09:00:00-09:00:04, committed
    writer_a = engine.connect()
    held = writer_a.begin()
    _log(engine, 9, rng.random(1), None, first_second=3599, connection=writer_a)  # 09:59:59
    _log(engine, 10, rng.random(3), None)  # writer B, committed first
    now = T0 + timedelta(hours=10, seconds=30)
    refresh(engine, REFERENCES, now=now, label_delay=DELAY)
    held.commit()
    writer_a.close()
    for minutes in (10, 20, 30):
        refresh(engine, REFERENCES, now=now + timedelta(minutes=minutes), label_delay=DELAY)
    assert _quality(engine)[9].rows == 6
    with engine.connect() as connection:
        ops = {r.hour - hour_of(T0): r for r in connection.execute(select(hourly_ops_table))}
    assert ops[9].requests == 6


def _planned_bin_groups(engine: Any, hours: int) -> int:
    binned = binned_columns(REFERENCES, census_layout)
    found = statements(binned, T0, T0 + timedelta(hours=hours), dialect="postgresql")
    sql = str(found["bins"].compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")
        plan = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql.replace("%", "%%"))
        return plan.scalar_one()[0]["Plan"]["Plan Rows"]


def test_postgresql_plans_the_bins_for_the_hours_there_are(postgresql_engine: Any) -> None:
    """10 hours of 2,000 rows, each at its own second: the planner must expect about as many
    groups as hours x bins. Reading the hour's distinct values from the unique `ts`, it expected
    a group per row in each of the 13 grouping sets (260,000), and sized its hash table for
    them: 1.3 GB for a week of a 10M-row log, which has 10,752 groups."""
    rng = np.random.default_rng(3)
    for hour in range(10):
        _log(postgresql_engine, hour, rng.random(2000), None)
    sets, rows = len(REFERENCES), 20_000
    assert _planned_bin_groups(postgresql_engine, 10) < sets * rows / 10  # 22,610 here
    downgrade(postgresql_engine, "0007")  # without the hour's statistics: a group per row
    assert _planned_bin_groups(postgresql_engine, 10) >= sets * rows


def _sorts_planned(engine: Any, binned: dict[str, Any], work_mem_mb: int) -> int:
    found = statements(binned, T0, T0 + timedelta(hours=168), dialect="postgresql")
    sql = str(found["bins"].compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.begin() as connection:
        connection.exec_driver_sql(f"SET LOCAL work_mem = '{work_mem_mb}MB'")
        plan = connection.exec_driver_sql("EXPLAIN " + sql.replace("%", "%%")).scalars().all()
    return sum("Sort Key" in line for line in plan)


def test_postgresql_hashes_every_features_bins_of_a_wide_spec(postgresql_engine: Any) -> None:
    """50 features: at 64 MB of work_mem the planner sorted the rows again for 20 of the 50
    grouping sets (a 10M-row rebuild took 313 s); the refresh gives it memory by the number
    of features, and it hashes them all (one sort, the first set's)."""
    with postgresql_engine.begin() as connection:  # a week, a row every 2.5 s
        connection.exec_driver_sql(
            "INSERT INTO predictions (prediction_id, request_id, row_index, ts, model_version, "
            "probability, predicted_class) SELECT lpad(to_hex(g), 24, '0'), 'r', 0, "
            "%(t0)s + g * INTERVAL '2.5 seconds', 'v1', 0.5, 0 "
            "FROM generate_series(0, 241919) AS g",
            {"t0": T0},
        )
        connection.exec_driver_sql("ANALYZE")
    census = list(binned_columns(REFERENCES, census_layout).values())
    wide = {f"f{i}": census[i % len(census)] for i in range(50)}
    assert _sorts_planned(postgresql_engine, wide, 64) > 1  # what it did
    assert _sorts_planned(postgresql_engine, wide, bins_work_mem_mb(len(wide))) == 1


def test_the_agent_judges_the_version_serving_at_the_end_of_the_hour(engine: Any) -> None:
    """Within an hour the retired version (named to sort last) served first and badly, the new
    one after it and well: the new one is judged. It used to be the retired one (by the
    version's name), critical, with roll_back_model, which would roll back the good new one."""
    rng = np.random.default_rng(11)

    def scored(good: bool) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 2, 120)
        noise = rng.random(120)
        return (np.clip(0.65 * labels + 0.35 * noise, 0, 1) if good else noise), labels

    for hour in range(30):
        _log(engine, hour, *scored(True), version="zzz-retired")
    _log(engine, 30, *scored(False), version="zzz-retired")
    _log(engine, 30, *scored(True), version="aaa-new", first_second=1800)
    refresh(engine, REFERENCES, now=T0 + timedelta(hours=40), label_delay=timedelta(0))
    points = hourly_points(engine, min_labelled=100)
    last = [p["model_version"] for p in points if p["ts"] == points[-1]["ts"]]
    assert last == ["zzz-retired", "aaa-new"]  # the one serving at the end of the hour last
    plan = monitor(parse_metrics_lines([json.dumps(p) for p in points], source="t"), None, now=NOW)
    history = plan.findings[-1]
    assert history["model_version"] == "aaa-new"
    assert plan.status == "healthy"
    assert "roll_back_model" not in plan.actions


def test_statistics_compile_for_bigquery() -> None:
    bigquery = pytest.importorskip("sqlalchemy_bigquery")
    found = statements(binned_columns(REFERENCES, census_layout), T0, T0 + timedelta(hours=1))
    compiled = {n: str(s.compile(dialect=bigquery.BigQueryDialect())) for n, s in found.items()}
    assert "DIV(UNIX_SECONDS(`predictions`.`ts`), 3600)" in compiled["rows"]
    assert "GROUP BY `hour`" in compiled["rows"]
    assert "row_number() OVER (PARTITION BY" in compiled["quality"]
    assert "CAST(FLOOR(" in compiled["ops"]
    assert "AS INT64)" in compiled["ops"]
    assert all("strftime" not in sql and "EXTRACT(EPOCH" not in sql for sql in compiled.values())


# --- judged safely ----------------------------------------------------------------------------


def test_a_client_without_sensitive_fields_gets_no_drift_and_no_page(
    artifacts_dir: Path, tmp_path: Path
) -> None:
    sample = load_dataset(DATA / "adult_ref_sample.csv")
    rows = [
        {k: (None if v != v else v) for k, v in r.items() if k not in SENSITIVE}
        for r in sample.features.to_dict(orient="records")
    ]
    settings = Settings(
        ARTIFACTS_DIR=artifacts_dir,
        PREDICTION_LOG_DIR=tmp_path,
        ACCEPT_EVENT_TIME=True,
        LOG_REQUESTS=False,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        for hour in range(24):
            stamp = (datetime.now(UTC) - timedelta(days=2, hours=hour)).isoformat()
            answer = client.post("/predict", json=rows, headers={"X-Event-Time": stamp})
            assert answer.status_code == 200, answer.text
        assert app.state.prediction_log.flush()
        engine = app.state.prediction_log.engine
        references = load_references(artifacts_dir)
        refresh(engine, references, now=datetime.now(UTC), label_delay=DELAY)
        report = drift_report(engine, references, hours=48, threshold=0.2)
    assert sorted(report["not_observed"]) == sorted(SENSITIVE)
    assert report["model_input_drift"] is False
    assert report["overall_drift"] is False
    history = [json.dumps({**p, "ts": p["ts"]}) for p in _falling_pr_history()]
    plan = monitor(parse_metrics_lines(history, source="t"), DriftSummary(**report), now=NOW)
    assert plan.status != "critical"  # a 5% PR-AUC dip without input drift pages no one
    assert not plan.page_oncall


def _falling_pr_history() -> list[dict[str, Any]]:
    base = {"roc_auc": 0.9, "acc": 0.85, "latency_p95_ms": 10.0, "error_rate": 0.0}
    points = [
        {"ts": (T0 + timedelta(hours=h)).isoformat(), "pr_auc": 0.7, **base} for h in range(200)
    ]
    points[-1]["pr_auc"] = 0.7 * 0.94
    return points


def _point(hour: int, roc: float, version: str) -> str:
    return json.dumps(
        {
            "ts": (T0 + timedelta(hours=hour)).isoformat(),
            "roc_auc": roc,
            "pr_auc": 0.7,
            "acc": 0.85,
            "latency_p95_ms": 10.0,
            "error_rate": 0.0,
            "model_version": version,
        }
    )


def test_a_promotion_midweek_keeps_the_medians_per_version() -> None:
    # Version a at 0.90 for six days, then version b, steadily at 0.84: b is judged against b.
    lines = [_point(h, 0.90, "a") for h in range(144)]
    lines += [_point(h, 0.84, "b") for h in range(144, 192)]
    verdict = judge(parse_metrics_lines(lines, source="t"), None)
    assert verdict.status == "healthy"
    assert verdict.evidence.model_version == "b"
    assert verdict.evidence.roc.median == pytest.approx(0.84)
    # Mixed, the same history would read as a 6.7% drop: critical.
    mixed = [line.replace('"b"', '"a"') for line in lines]
    assert judge(parse_metrics_lines(mixed, source="t"), None).status == "critical"


def test_a_new_version_with_few_points_falls_back_and_says_so() -> None:
    lines = [_point(h, 0.90, "a") for h in range(190)] + [_point(190, 0.80, "b")]
    plan = monitor(parse_metrics_lines(lines, source="t"), None, now=NOW)
    history = plan.findings[-1]
    assert "every version" in history["medians_from"]
    assert plan.status == "critical"  # judged against a's history, as said


class _CountedPoint(MetricPoint):
    """A point that counts every read of its fields: the work judge does, counted exactly."""

    reads: ClassVar[int] = 0

    def __getattribute__(self, name: str) -> Any:
        if name in MetricPoint.model_fields:
            _CountedPoint.reads += 1
        return super().__getattribute__(name)


def _judge_reads(n: int) -> int:
    # Falling 0.04% an hour, 3.3% a week: every point breaches, so the streak walks them all.
    lines = [_point(h, 0.9 * 0.9996**h, "a") for h in range(n)]
    points = [
        _CountedPoint.model_construct(**p.model_dump())
        for p in parse_metrics_lines(lines, source="t")
    ]
    _CountedPoint.reads = 0
    verdict = judge(points, None)
    assert verdict.evidence.roc.breach_hours > n * 0.9  # the streak was walked, not skipped
    return _CountedPoint.reads


def test_monitor_grows_linearly_with_its_points() -> None:
    # Counted, not timed (a timing ratio read 9x for 4x the points on a busy CI machine): 4x the
    # points must cost 4x the reads when every pass is linear, 16x when one is quadratic. The
    # sliding medians are pandas' skip-list rolling window, O(n log w), in C.
    small, large = _judge_reads(5_000), _judge_reads(20_000)
    assert small > 5_000
    assert large / small < 4.5, (small, large)
