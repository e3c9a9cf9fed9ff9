"""Bringing a table: infer against Arrow's own read, training a wide table, batch scoring against
the compiled trees alone, and serving a spec-built model against the census model and
hello-world FastAPI, each yardstick measured in the same run.

Goals (issue "Bring your own table", part 1):
- infer on a 1,000,000-row, 30-column CSV: at most 2x pyarrow.csv.read_csv on the same file;
- a 50-column, 100,000-row table trains with 20 trials in under 2 minutes;
- batch scoring of 1,000,000 rows: at most 1.5x the compiled trees alone on the same matrix;
- a spec-built model serves one row at c=16 at >= 75% of hello-world, the fast path taken.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Uvicorn, median, table
from bench.serving import wrk

ROOT = Path(__file__).resolve().parent.parent
INFER_ROWS, INFER_COLUMNS = 1_000_000, 30
TRAIN_ROWS, TRAIN_COLUMNS, TRAIN_TRIALS = 100_000, 50, 20
BATCH_ROWS = 1_000_000


def _wide_csv(path: Path, rows: int, columns: int) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from tests.tables import wide_frame

    frame = wide_frame(rows, columns - 2)  # + the sensitive group and the label
    pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def infer_speed(work: Path, repeats: int = 5) -> dict[str, Any]:
    """read_csv alone, then infer's whole work (read, profile, leakage, the spec written), in
    turns so the machine's drift hits both; one untimed turn first (the imports a first call
    pays; the CLI's own time, imports and all, is measured apart)."""
    import pyarrow.csv as pacsv

    from src.dataset.infer import Options, draft_spec, read_for_infer

    path = _wide_csv(work / "wide.csv", INFER_ROWS, INFER_COLUMNS)
    options = Options(label="label", sensitive=("group",), name="wide")
    read, infer = [], []
    draft_spec(read_for_infer(path), options, source=path.name)  # warm
    for _ in range(repeats):
        started = time.perf_counter()
        pacsv.read_csv(path)
        read.append(time.perf_counter() - started)
        started = time.perf_counter()
        spec = draft_spec(read_for_infer(path), options, source=path.name).spec
        (work / "wide.yaml").write_text(spec.to_yaml())
        infer.append(time.perf_counter() - started)
    started = time.perf_counter()
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.dataset",
            "infer",
            "--data",
            str(path),
            "--label",
            "label",
            "--sensitive",
            "group",
            "--out",
            str(work / "cli.yaml"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    del cli
    return {
        "read_csv_s": [round(v, 3) for v in read],
        "infer_s": [round(v, 3) for v in infer],
        "cli_s": round(time.perf_counter() - started, 2),
        "ratio": round(median(infer) / median(read), 2),
        "bytes": path.stat().st_size,
    }


def training_time(work: Path) -> dict[str, Any]:
    """The wide table from infer to a trained set, as a user runs it (the CLI, 20 trials)."""
    path = _wide_csv(work / "train.csv", TRAIN_ROWS, TRAIN_COLUMNS)
    spec = work / "train.yaml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "src.dataset",
            "infer",
            "--data",
            str(path),
            "--label",
            "label",
            "--sensitive",
            "group",
            "--out",
            str(spec),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.train",
            "--data",
            str(path),
            "--spec",
            str(spec),
            "--outdir",
            str(work / "set"),
            "--trials",
            str(TRAIN_TRIALS),
            "--no-register",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    metrics = json.loads((work / "set" / "metrics.json").read_text())
    progress = [line for line in done.stderr.splitlines() if line.strip()]
    return {
        "seconds": round(seconds, 1),
        "roc_auc": round(metrics["roc_auc"], 4),
        "progress_lines": len(progress),
        "last_lines": progress[-3:],
    }


def batch_speed(artifacts: Path, work: Path, repeats: int = 3) -> dict[str, Any]:
    """python -m src.predict's work on 1,000,000 census rows (read, check, encode, score, write)
    against the compiled trees alone on the same matrix, with the same threads."""
    import numpy as np
    import pandas as pd

    from src import predict
    from src.dataset.table import read_arrow, table_columns
    from src.model.batch import encode_table, score
    from src.service.state import verified_predictor
    from src.settings import Settings

    frame = pd.read_csv(ROOT / "data" / "adult_synth.csv", dtype=str, keep_default_na=False)
    rows = frame.iloc[np.random.default_rng(3).integers(0, len(frame), BATCH_ROWS)]
    path = work / "batch.csv"
    rows.to_csv(path, index=False)
    predictor = verified_predictor(artifacts, Settings(LOG_PREDICTIONS=False))[0]
    spec = predictor.spec
    names = table_columns(path)
    dictionary = [c.name for c in spec.columns if c.kind in ("categorical", "boolean")]
    matrix = encode_table(
        predictor.encoder, read_arrow(path, names, spec.accepted, dictionary)
    ).matrix
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    pq.write_table(pacsv.read_csv(path), work / "batch.parquet")
    runs = {
        fmt: predict.build_parser().parse_args(
            [
                "--data",
                str(source),
                "--out",
                str(work / f"scored.{fmt}"),
                "--artifacts",
                str(artifacts),
            ]
        )
        for fmt, source in (("csv", path), ("parquet", work / "batch.parquet"))
    }
    model, single, whole = [], [], {fmt: [] for fmt in runs}
    for _ in range(repeats):
        started = time.perf_counter()
        score(predictor.probabilities, matrix)
        model.append(time.perf_counter() - started)
        started = time.perf_counter()
        score(predictor.probabilities, matrix, threads=1)
        single.append(time.perf_counter() - started)
        for fmt, args in runs.items():
            started = time.perf_counter()
            predict.run(args)
            whole[fmt].append(time.perf_counter() - started)
    return {
        "rows": BATCH_ROWS,
        "trees_alone_s": [round(v, 3) for v in model],
        "trees_alone_one_thread_s": [round(v, 3) for v in single],
        "whole_run_s": [round(v, 3) for v in whole["csv"]],
        "whole_run_parquet_s": [round(v, 3) for v in whole["parquet"]],
        "ratio": round(median(whole["csv"]) / median(model), 2),
        "ratio_parquet": round(median(whole["parquet"]) / median(model), 2),
    }


def fast_path_taken(folder: Path) -> dict[str, bool]:
    """Valid rows of a spec-built model take the fast path, row by row and as columns."""
    from src.service.state import verified_predictor
    from src.settings import Settings

    predictor = verified_predictor(folder, Settings(LOG_PREDICTIONS=False))[0]
    rows = json.loads((folder / "sample_rows.json").read_text())["rows"]
    return {
        "one_row": predictor.encoder.encode(rows[:1]) is not None,
        "32_rows": predictor.encoder.encode(rows) is not None,
    }


def serving_speed(census: Path, spec_built: Path, work: Path, rounds: int = 3) -> dict[str, Any]:
    """One row per request at c=1 and c=16: hello-world, the census model, the spec-built one."""
    servers = {
        "hello-world FastAPI": (Uvicorn("bench.hello_app:app", work / "hello.log", "/hello"), None),
    }
    for name, folder in (("census (Adult spec)", census), ("spec-built (adversarial)", spec_built)):
        body = work / f"{len(servers)}.json"
        body.write_text(
            json.dumps(json.loads((folder / "sample_rows.json").read_text())["rows"][:1])
        )
        script = work / f"{len(servers)}.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'local f = io.open("{body}"); wrk.body = f:read("*a"); f:close()\n'
        )
        env = {"ARTIFACTS_DIR": str(folder), "PREDICTION_LOG_DIR": str(work / name[:6])}
        servers[name] = (Uvicorn("src.app:app", work / f"{name[:6]}.log", "/ready", **env), script)
    throughput: dict[str, dict[str, list[float]]] = {name: {} for name in servers}
    try:
        for connections in (1, 16):
            for _ in range(rounds):
                for name, (server, script) in servers.items():
                    path = "/hello" if script is None else "/predict"
                    rps = wrk(server.url + path, connections=connections, seconds=5, script=script)
                    throughput[name].setdefault(f"c{connections}", []).append(rps)
    finally:
        for server, _ in servers.values():
            server.stop()
    hello = throughput["hello-world FastAPI"]
    ratios = {
        name: {c: round(median(t[c]) / median(hello[c]), 3) for c in ("c1", "c16")}
        for name, t in throughput.items()
    }
    return {"throughput": throughput, "ratio_vs_hello": ratios}


def _adversarial_set(work: Path) -> Path:
    from src.dataset.spec import load_spec
    from src.training.train import train
    from tests.tables import adversarial_table

    data, told = adversarial_table(work)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "src.dataset",
            "infer",
            "--data",
            str(data),
            "--label",
            told["label"],
            "--positive",
            told["positive"],
            "--sensitive",
            *told["sensitive"],
            "--out",
            str(work / "adv.yaml"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    train(data, work / "adv-set", spec=load_spec(work / "adv.yaml"), trials=5)
    return work / "adv-set"


def run(artifacts: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    print("  infer against read_csv ...", flush=True)
    infer = infer_speed(work)
    print("  training a 100,000 x 50 table, 20 trials ...", flush=True)
    training = training_time(work)
    print("  batch scoring 1,000,000 rows ...", flush=True)
    batch = batch_speed(artifacts, work)
    print("  serving a spec-built model ...", flush=True)
    spec_built = _adversarial_set(work)
    fast = fast_path_taken(spec_built)
    serving = serving_speed(artifacts, spec_built, work)
    spec_ratio = serving["ratio_vs_hello"]["spec-built (adversarial)"]
    census_ratio = serving["ratio_vs_hello"]["census (Adult spec)"]
    markdown = table(
        ["measure", "figure", "yardstick (same run)", "ratio"],
        [
            [
                "infer, 1M x 30 CSV",
                f"{median(infer['infer_s']):.2f} s",
                f"read_csv {median(infer['read_csv_s']):.2f} s",
                f"{infer['ratio']:.2f}x",
            ],
            ["infer CLI, same file (with imports)", f"{infer['cli_s']:.2f} s", "-", "-"],
            [
                "train 100k x 50, 20 trials (CLI)",
                f"{training['seconds']:.0f} s",
                "goal 120 s",
                f"ROC-AUC {training['roc_auc']}",
            ],
            [
                "batch scoring, 1M rows, CSV in and out",
                f"{median(batch['whole_run_s']):.2f} s",
                f"trees alone {median(batch['trees_alone_s']):.2f} s "
                f"(one thread {median(batch['trees_alone_one_thread_s']):.2f} s)",
                f"{batch['ratio']:.2f}x",
            ],
            [
                "batch scoring, 1M rows, Parquet in and out",
                f"{median(batch['whole_run_parquet_s']):.2f} s",
                "same",
                f"{batch['ratio_parquet']:.2f}x",
            ],
            [
                "one row, c=16, spec-built",
                f"{median(serving['throughput']['spec-built (adversarial)']['c16']):.0f} req/s",
                f"hello {median(serving['throughput']['hello-world FastAPI']['c16']):.0f} req/s",
                f"{spec_ratio['c16']:.0%}",
            ],
            [
                "one row, c=16, census",
                f"{median(serving['throughput']['census (Adult spec)']['c16']):.0f} req/s",
                "same hello",
                f"{census_ratio['c16']:.0%}",
            ],
            [
                "one row, c=1, spec-built / census",
                f"{spec_ratio['c1']:.0%} / {census_ratio['c1']:.0%} of hello",
                "-",
                "-",
            ],
        ],
    )
    goals = {
        "infer <= 2x read_csv": infer["ratio"] <= 2.0,
        "train 100k x 50, 20 trials < 120 s": training["seconds"] < 120,
        "batch 1M rows <= 1.5x the trees alone": batch["ratio"] <= 1.5,
        "spec-built one row at c=16 >= 75% of hello": spec_ratio["c16"] >= 0.75,
        "spec-built valid rows take the fast path": all(fast.values()),
    }
    return {
        "infer": infer,
        "training": training,
        "batch": batch,
        "serving": serving,
        "fast_path": fast,
        "goals": goals,
        "markdown": markdown,
    }
