"""Monitoring in SQL at 1M and 10M logged rows, on SQLite and PostgreSQL, for the census (13
columns) and a 50-column spec, against the path it replaced (read every row into pandas, score
each hour with scikit-learn) in the same run.

Rows are generated inside the database (a recursive CTE in SQLite, generate_series in PostgreSQL):
30 days of traffic, 30% of rows labelled, a request line per 10 rows. Each operation runs in a
fresh Python process, so its peak RSS is its own: a full rebuild of the statistics, then one new
hour of traffic and the incremental update that follows.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import text

from bench.common import table
from bench.log_capacity import drop_postgres, fresh_postgres
from src.dataset.spec import ColumnSpec, DatasetSpec, LabelSpec, adult_spec
from src.loop.columns import ensure_layout
from src.loop.tables import make_engine

ROOT = Path(__file__).resolve().parent.parent
HOURS = 720
T0 = 1_767_225_600  # 2026-01-01 00:00 UTC
# Generated values: a number is uniform over [low, low + span); a category uniform over its list.
CENSUS_CATEGORIES = {
    "workclass": ["Private", "Self-emp-not-inc", "Local-gov", "State-gov", "Federal-gov"],
    "education": ["HS-grad", "Some-college", "Bachelors", "Masters", "11th", "Assoc-voc"],
    "marital_status": ["Married-civ-spouse", "Never-married", "Divorced", "Widowed"],
    "occupation": ["Prof-specialty", "Craft-repair", "Exec-managerial", "Adm-clerical", "Sales"],
    "relationship": ["Husband", "Not-in-family", "Own-child", "Unmarried", "Wife"],
    "race": ["White", "Black", "Asian-Pac-Islander", "Other"],
    "sex": ["Male", "Female"],
    "native_country": ["United-States", "Mexico", "Philippines", "Germany", "India"],
}
CENSUS_NUMBERS = {
    "age": (17, 60),
    "education_num": (1, 16),
    "capital_gain": (0, 3),
    "capital_loss": (0, 2),
    "hours_per_week": (10, 60),
}
WIDE_NUMBERS = 25  # the 50-column spec: 25 numeric inputs, 23 categorical, 2 sensitive
WIDE_CATEGORICAL = 23


@dataclass(frozen=True)
class Layout:
    """A spec the log is made for, the values each of its columns is generated from, and a
    reference sample drawn the same way (what the statistics' bins are fit on)."""

    name: str
    spec: DatasetSpec
    numbers: dict[str, tuple[int, int]]
    categories: dict[str, list[str]]

    def reference_csv(self, path: Path, rows: int = 2000) -> Path:
        rng = np.random.default_rng(0)
        frame = {n: rng.integers(low, low + span, rows) for n, (low, span) in self.numbers.items()}
        frame |= {n: rng.choice(values, rows) for n, values in self.categories.items()}
        frame[self.spec.label.column] = rng.integers(0, 2, rows)
        pd.DataFrame(frame).to_csv(path, index=False)
        return path


def census_layout() -> Layout:
    return Layout("census, 13 columns", adult_spec(), CENSUS_NUMBERS, CENSUS_CATEGORIES)


def wide_layout() -> Layout:
    numbers = {f"n{i:02d}": (0, 100) for i in range(WIDE_NUMBERS)}
    categories = {f"c{i:02d}": [f"v{j}" for j in range(6)] for i in range(WIDE_CATEGORICAL)}
    sensitive = {"s0": ["a", "b", "c"], "s1": ["x", "y"]}
    columns = [ColumnSpec(name=n, kind="numeric", min=0, max=1000) for n in numbers]
    columns += [ColumnSpec(name=n, kind="categorical", categories=v) for n, v in categories.items()]
    columns += [
        ColumnSpec(name=n, kind="categorical", categories=v, sensitive=True)
        for n, v in sensitive.items()
    ]
    spec = DatasetSpec(
        name="wide-bench", label=LabelSpec(column="y", positive=1, negative=0), columns=columns
    )
    return Layout("50 columns", spec, numbers, categories | sensitive)


def _choice(dialect: str, values: list[str]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    if dialect == "sqlite":
        listed = ", ".join(json.dumps(v) for v in values)
        return f"json_extract('[{listed}]', '$[' || (abs(random()) % {len(values)}) || ']')"
    return f"(ARRAY[{quoted}])[1 + floor(random() * {len(values)})::int]"


def _number(dialect: str, low: int, span: int) -> str:
    return (
        f"({low} + abs(random()) % {span})"
        if dialect == "sqlite"
        else f"({low} + floor(random() * {span}))"
    )


def _generate(
    engine: Any, layout: Layout, rows: int, first_hour: int, hours: int, seed_key: int
) -> None:
    """`rows` predictions spread over `hours` from `first_hour`, their requests and labels."""
    dialect = engine.dialect.name
    step = hours * 3600 / rows
    logged = ensure_layout(engine, layout.spec)
    quote = engine.dialect.identifier_preparer.quote
    features = {n: _number(dialect, *span) for n, span in layout.numbers.items()}
    features.update({n: _choice(dialect, values) for n, values in layout.categories.items()})
    columns = ", ".join(quote(logged.column_of(n)) for n in features)
    values = ", ".join(features.values())
    start = T0 + first_hour * 3600
    if dialect == "sqlite":
        source = (  # the bench's own numbers, no input: noqa
            f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {rows - 1}) "  # noqa: S608
            "SELECT i, (abs(random()) % 1000) / 1000.0 AS p FROM s"
        )
        pid = f"printf('%012x%016x-00000', {seed_key}, i)"
        ts = f"strftime('%Y-%m-%d %H:%M:%f', {start} + i * {step}, 'unixepoch') || '+00:00'"
        labelled = "abs(random()) % 10 < 3"
        label = "(abs(random()) % 1000) / 1000.0 < probability"
        latency = "(abs(random()) % 5000) / 100.0"
        tenth = "substr(prediction_id, 13, 16) LIKE '%0'"
    else:
        source = f"SELECT i, random() AS p FROM generate_series(0, {rows - 1}) AS i"  # noqa: S608
        pid = f"lpad(to_hex({seed_key}), 12, '0') || lpad(to_hex(i), 16, '0') || '-00000'"
        ts = f"to_timestamp({start} + i * {step})"
        labelled = "random() < 0.3"
        label = "random() < probability"
        latency = "random() * 50"
        tenth = "right(prediction_id, 7) LIKE '0-00000'"
    statements = [
        f"INSERT INTO predictions (prediction_id, request_id, row_index, ts, model_version, "  # noqa: S608
        f"{columns}, probability, predicted_class) "
        f"SELECT {pid}, 'bench', 0, {ts}, 'v1', {values}, p, "
        f"CASE WHEN p >= 0.5 THEN 1 ELSE 0 END FROM ({source}) AS g",
        f"INSERT INTO labels (prediction_id, label, received_at) SELECT prediction_id, "  # noqa: S608
        f"CASE WHEN {label} THEN 1 ELSE 0 END, ts FROM predictions WHERE prediction_id LIKE "
        f"'{seed_key:012x}%' AND {labelled}",
        f"INSERT INTO requests (request_id, ts, path, status, latency_ms, rows, model_version) "  # noqa: S608
        f"SELECT 'bench', ts, '/predict', 200, {latency}, 10, 'v1' FROM predictions "
        f"WHERE prediction_id LIKE '{seed_key:012x}%' AND {tenth}",
    ]
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
    if dialect == "postgresql":  # what autovacuum does to a table that grew this much
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))


_OPERATION = """
import json, sys, time
from datetime import UTC, datetime, timedelta
sys.path.insert(0, {root!r})
from src.loop.tables import make_engine
from src.monitor_window import load_references
from src.loop.statistics import refresh
from src.monitoring.drift import fit_reference
from src.dataset.spec import load_spec
from src.dataset.table import load_dataset
engine = make_engine({url!r})
spec = load_spec({spec!r})
rows = load_dataset({reference!r}, spec, lenient=True)
references = fit_reference(spec, rows.features)
started = time.perf_counter()
{body}
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec, so it would read the bench's own
# peak (the parent's RSS at fork) instead of this process's.
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({{"seconds": time.perf_counter() - started,
                  "peak_rss_mib": int(hwm.split()[1]) / 1024}}))
"""

_REFRESH = (
    "refresh(engine, references, now=datetime.fromtimestamp({now}, UTC), "
    "label_delay=timedelta(hours=24), rebuild={rebuild})"
)

# The path the statistics replaced: every row into pandas, each hour scored with scikit-learn.
_PANDAS = """
import numpy as np, pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sqlalchemy import text
query = ("SELECT p.ts, p.probability, p.predicted_class, l.label FROM predictions p "
         "LEFT JOIN labels l ON l.prediction_id = p.prediction_id")
with engine.connect() as connection:
    frame = pd.DataFrame(connection.execute(text(query)).all(), columns=["ts", "p", "c", "y"])
frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="mixed")
labelled = frame.dropna(subset=["y"])
for hour, rows in labelled.groupby(labelled["ts"].dt.floor("h")):
    y = rows["y"].to_numpy(dtype=int)
    if len(np.unique(y)) == 2:
        roc_auc_score(y, rows["p"]), average_precision_score(y, rows["p"])
"""


# The attribution step of the monitoring job (src/loop/attributions.py) on the last 24 hours:
# its sample read through the ts index, then exact contributions; the model loaded before the
# clock starts (as the job loads it once).
_ATTRIBUTION = """
import json, sys, time
from datetime import UTC, datetime
from pathlib import Path
sys.path.insert(0, {root!r})
from src.loop.attributions import attribution_drift, training_summary, window_sample
from src.loop.tables import make_engine
from src.model.artifacts import load_bundle
from src.model.encoder import CompiledEncoder
from src.model.reasons import Explainer
engine = make_engine({url!r})
bundle = load_bundle(Path({artifacts!r}))
encoder = CompiledEncoder.from_spec(bundle.spec, bundle.encoding)
explainer = Explainer(bundle.model_text, encoder)
summary = training_summary(Path({artifacts!r}) / "shap_summary.csv")
window = {{"first_hour": datetime.fromtimestamp({first}, UTC).isoformat(),
          "last_hour": datetime.fromtimestamp({last}, UTC).isoformat()}}
started = time.perf_counter()
rows = window_sample(engine, bundle.spec, window, 2000)
sampled = time.perf_counter()
result = attribution_drift(explainer, encoder, rows, summary, 0.1)
done = time.perf_counter()
print(json.dumps({{"seconds": done - started, "sample_seconds": sampled - started,
                  "contributions_seconds": done - sampled, "rows": len(rows)}}))
"""


STEP_PARTS = ("sample_seconds", "contributions_seconds", "seconds")


def attribution_step(url: str, artifacts: Path, now: int) -> dict[str, float]:
    last = (now // 3600 - 1) * 3600
    script = _ATTRIBUTION.format(
        root=str(ROOT), url=url, artifacts=str(artifacts), first=last - 23 * 3600, last=last
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run(url: str, body: str, files: dict[str, str]) -> dict[str, float]:
    script = _OPERATION.format(root=str(ROOT), url=url, body=body, **files)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fresh_database(kind: str, work: Path) -> str | None:
    if kind == "SQLite":
        return f"sqlite:///{work / f'monitoring-{uuid.uuid4().hex[:6]}.db'}"
    return fresh_postgres()


def measure(
    kind: str,
    layout: Layout,
    rows: int,
    work: Path,
    *,
    yardstick: bool,
    artifacts: Path | None = None,
) -> dict[str, Any] | None:
    url = _fresh_database(kind, work)
    if url is None:
        return None
    engine = make_engine(url)
    spec_file = work / f"{layout.spec.name}.yaml"
    spec_file.write_text(layout.spec.to_yaml())
    files = {
        "spec": str(spec_file),
        "reference": str(layout.reference_csv(work / f"{layout.spec.name}.csv")),
    }
    started = time.perf_counter()
    _generate(engine, layout, rows, 0, HOURS, seed_key=1)
    generated = time.perf_counter() - started
    now = T0 + HOURS * 3600 + 60
    result: dict[str, Any] = {"rows": rows, "columns": len(layout.spec.features)}
    result["generate_s"] = round(generated, 1)
    result["rebuild"] = _run(url, _REFRESH.format(now=now, rebuild=True), files)
    _generate(engine, layout, rows // HOURS, HOURS, 1, seed_key=2)  # one more hour of traffic
    result["one_hour"] = _run(url, _REFRESH.format(now=now + 3600, rebuild=False), files)
    if yardstick:
        result["pandas_path"] = _run(url, _PANDAS, files)
    if artifacts is not None and layout.spec.name == adult_spec().name:
        result["attribution"] = attribution_step(url, artifacts, now + 3600)
    engine.dispose()
    if kind == "PostgreSQL":  # 10M rows of 50 columns hold gigabytes: give them back
        drop_postgres(url)
    return result


# (the spec, the database, logged rows): the census at 1M and 10M on both databases, the
# 50-column spec at 10M on PostgreSQL and 1M on SQLite (its 10M rebuild would take a quarter hour).
CASES = (
    ("census", "SQLite", 1_000_000),
    ("census", "SQLite", 10_000_000),
    ("census", "PostgreSQL", 1_000_000),
    ("census", "PostgreSQL", 10_000_000),
    ("wide", "SQLite", 1_000_000),
    ("wide", "PostgreSQL", 10_000_000),
)


def run(
    artifacts: Path | None = None, cases: tuple[tuple[str, str, int], ...] = CASES
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
    layouts = {"census": census_layout(), "wide": wide_layout()}
    results: dict[str, Any] = {}
    for which, kind, rows in cases:
        layout = layouts[which]
        name = f"{kind} {rows:,}, {layout.name}"
        print(f"  {name} ...", file=sys.stderr, flush=True)
        results[name] = measure(
            kind, layout, rows, work, yardstick=rows <= 1_000_000, artifacts=artifacts
        )
    return _summary(results)


def _postgres(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for n, r in results.items() if r and n.startswith("PostgreSQL")]


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for name, r in results.items():
        if r is None:
            rows.append([name, "no server", "-", "-", "-", "-"])
            continue
        pandas = r.get("pandas_path")
        rows.append(
            [
                name,
                f"{r['generate_s']} s",
                f"{r['rebuild']['seconds']:.1f} s / {r['rebuild']['peak_rss_mib']:.0f} MiB",
                f"{r['one_hour']['seconds']:.2f} s / {r['one_hour']['peak_rss_mib']:.0f} MiB",
                f"{pandas['seconds']:.1f} s / {pandas['peak_rss_mib']:.0f} MiB"
                if pandas
                else "not run",
                f"{pandas['seconds'] / r['one_hour']['seconds']:.0f}x" if pandas else "-",
            ]
        )
    markdown = table(
        [
            "database, logged rows, spec",
            "generated in",
            "full rebuild: time / peak RSS",
            "one new hour: time / peak RSS",
            "the pandas path it replaced",
            "pandas path / one-hour update",
        ],
        rows,
    )
    big = [r for n, r in results.items() if r and r["rows"] >= 10_000_000 and r["columns"] < 50]
    pg_big = [r for r in big if r in _postgres(results)]
    wide = [r for n, r in results.items() if r and r["columns"] >= 50]
    pg_wide = [r for r in wide if r in _postgres(results) and r["rows"] >= 10_000_000]
    goals = {
        "one new hour under 1 s at 10M rows": bool(big)
        and all(r["one_hour"]["seconds"] < 1 for r in big),
        "full rebuild of 10M rows on PostgreSQL under 60 s": bool(pg_big)
        and all(r["rebuild"]["seconds"] < 60 for r in pg_big),
        "50 columns: one new hour under 2 s": bool(wide)
        and all(r["one_hour"]["seconds"] < 2 for r in wide),
        "50 columns: a rebuild of 10M rows on PostgreSQL under 120 s": bool(pg_wide)
        and all(r["rebuild"]["seconds"] < 120 for r in pg_wide),
        "peak RSS under 300 MB at 10M rows": bool(big)
        and all(
            max(r["rebuild"]["peak_rss_mib"], r["one_hour"]["peak_rss_mib"]) < 300
            for r in big + wide
        ),
    }
    explained = [(n, r["attribution"]) for n, r in results.items() if r and "attribution" in r]
    if explained:
        markdown += (
            "\n\nThe attribution step (2,000 rows sampled from the last 24 hours, their "
            "exact contributions), the model loaded before the clock starts:\n\n"
        )
        markdown += table(
            ["database, logged rows", "sample read, s", "contributions, s", "step, s"],
            [[n, *(f"{a[k]:.3f}" for k in STEP_PARTS)] for n, a in explained],
        )
        big_explained = [a for n, a in explained if "10,000,000" in n]
        goals["the attribution step at 2,000 rows under 1 s at 10M rows"] = bool(
            big_explained
        ) and all(a["seconds"] < 1 for a in big_explained)
    return {"results": results, "goals": goals, "markdown": markdown}
