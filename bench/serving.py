"""Serving speed on real uvicorn (one worker), against FastAPI's own speed in the same run.

Servers: a hello-world FastAPI app (the yardstick), the service with its compiled path
(PREDICT_ENGINE=lleaves) and with the naive pandas + scikit-learn path (PREDICT_ENGINE=pipeline).
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Uvicorn, census_features, cpu_seconds, median, percentile, table
from bench.common import census as load_dataset

FEATURES = census_features()

ROOT = Path(__file__).resolve().parent.parent
# The default deployment: lleaves + the prediction log (SQLite) on. The goals are judged on it.
COMPILED = "compiled (lleaves), prediction log on"


def wrk(url: str, *, connections: int, seconds: int, script: Path | None = None) -> float:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors against {url}:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def hey_fixed_rate(
    url: str, body: Path | None, *, rate: int, seconds: int, log: Path | None = None
) -> dict[str, float]:
    """`hey` at a fixed offered rate. Client-side latency includes hey itself, which shares the
    two cores; the service's own access log (`log`) gives the server-side figure."""
    workers = 10
    command = ["hey", "-z", f"{seconds}s", "-c", str(workers), "-q", str(rate // workers)]
    if body is not None:
        command += ["-m", "POST", "-T", "application/json", "-D", str(body)]
    offset = log.stat().st_size if log else 0
    out = subprocess.run(
        [*command, "-o", "csv", url], capture_output=True, text=True, check=True
    ).stdout
    records = list(csv.DictReader(io.StringIO(out)))
    latencies = [float(r["response-time"]) * 1000 for r in records]
    errors = sum(r["status-code"] != "200" for r in records)
    result = {
        "offered_rps": rate,
        "achieved_rps": round(len(records) / seconds, 1),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "errors": errors,
    }
    if log is not None:
        with log.open("rb") as f:
            f.seek(offset)
            lines = [json.loads(line) for line in f if b'"service.access"' in line]
        served = [e["latency_ms"] for e in lines if e["path"] == "/predict"]
        result["server_p50_ms"] = round(percentile(served, 0.50), 3)
        result["server_p99_ms"] = round(percentile(served, 0.99), 3)
    return result


def batch_latency(url: str, body: bytes, *, requests: int) -> dict[str, float]:
    """Sequential large requests; server time from the Server-Timing header the service sets."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    server, client = [], []
    for _ in range(requests):
        started = time.perf_counter()
        connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        client.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise SystemExit(f"batch request failed with {response.status}")
        server.append(float(response.getheader("server-timing").split("dur=")[1]))
    return {
        "server_p50_ms": round(median(server), 2),
        "server_p99_ms": round(percentile(server, 0.99), 2),
        "client_p50_ms": round(median(client), 2),
        "client_p99_ms": round(percentile(client, 0.99), 2),
    }


def paired_latency(url: str, body: bytes, paths: list[str], *, requests: int) -> dict[str, Any]:
    """Sequential requests to each path in turn (so the machine's drift hits all alike): the
    server's and the client's p50 per path."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    server: dict[str, list[float]] = {p: [] for p in paths}
    client: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(requests):
        for path in paths:
            started = time.perf_counter()
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            client[path].append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                raise SystemExit(f"{path} failed with {response.status}")
            server[path].append(float(response.getheader("server-timing").split("dur=")[1]))
    return {
        p: {
            "server_p50_ms": round(median(server[p]), 3),
            "client_p50_ms": round(median(client[p]), 3),
        }
        for p in paths
    }


def reasons_cost(url: str, one_row: bytes, batch: bytes) -> dict[str, Any]:
    """/predict with and without ?reasons=3: one row, and 1,000 rows."""
    paths = ["/predict", "/predict?reasons=3"]
    paired_latency(url, one_row, paths, requests=50)  # warm-up (the explainer loads once)
    one = paired_latency(url, one_row, paths, requests=1000)
    thousand = paired_latency(url, batch, paths, requests=50)
    return {
        "one_row": one,
        "one_row_ratio": round(one[paths[1]]["server_p50_ms"] / one[paths[0]]["server_p50_ms"], 2),
        "one_row_client_ratio": round(
            one[paths[1]]["client_p50_ms"] / one[paths[0]]["client_p50_ms"], 2
        ),
        "thousand_rows": thousand,
        "thousand_rows_ratio": round(
            thousand[paths[1]]["server_p50_ms"] / thousand[paths[0]]["server_p50_ms"], 2
        ),
    }


def _reasons_table(cost: dict[str, Any]) -> str:
    rows = []
    for label, key in (("1 row", "one_row"), ("1,000 rows", "thousand_rows")):
        plain, explained = cost[key]["/predict"], cost[key]["/predict?reasons=3"]
        ratio = cost[f"{key}_ratio"]
        rows.append(
            [
                label,
                f"{plain['server_p50_ms']} / {plain['client_p50_ms']}",
                f"{explained['server_p50_ms']} / {explained['client_p50_ms']}",
                f"{ratio:.2f}x",
            ]
        )
    return table(
        [
            "request",
            "plain: server / client p50 ms",
            "?reasons=3: server / client p50 ms",
            "server p50 ratio",
        ],
        rows,
    )


def _revision(checkout: Path) -> str:
    result = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return result.stdout.strip() or str(checkout)


def _span(values: list[float]) -> str:
    return f"{values[0]:.0%}-{values[1]:.0%}"


def run(
    artifacts: Path, *, seconds: int = 5, rounds: int = 3, compare_with: Path | None = None
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    sample = json.loads((artifacts / "sample_rows.json").read_text())["rows"]
    one_row = work / "one.json"
    one_row.write_text(json.dumps([sample[0]]))
    lua = work / "post.lua"
    lua.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{one_row}"); wrk.body = f:read("*a"); f:close()\n'
    )
    frame = load_dataset(ROOT / "data" / "adult_synth.csv").features.head(1000)
    batch = frame[list(FEATURES)].to_json(orient="records").encode()

    env = {"ARTIFACTS_DIR": str(artifacts), "PREDICTION_LOG_DIR": str(work / "log")}
    servers = {
        "hello-world FastAPI": Uvicorn("bench.hello_app:app", work / "hello.log", "/hello"),
        COMPILED: Uvicorn("src.app:app", work / "fast.log", "/ready", **env),
        "compiled, prediction log off": Uvicorn(
            "src.app:app", work / "nolog.log", "/ready", LOG_PREDICTIONS="false", **env
        ),
        "naive (pandas + sklearn)": Uvicorn(
            "src.app:app", work / "naive.log", "/ready", PREDICT_ENGINE="pipeline", **env
        ),
    }
    if compare_with is not None:  # another checkout, served the same way, measured in this run
        label = f"{COMPILED}, at {_revision(compare_with)}"
        servers[label] = Uvicorn(
            "src.app:app", work / "other.log", "/ready", cwd=compare_with, **env
        )
    try:
        throughput: dict[str, dict[str, list[float]]] = {n: {} for n in servers}
        for connections in (1, 16):
            for _ in range(rounds):  # interleaved, so drift in machine speed hits all alike
                for name, server in servers.items():
                    path, script = ("/hello", None) if "hello" in name else ("/predict", lua)
                    cpu_before = cpu_seconds(server.pid)
                    rps = wrk(
                        server.url + path, connections=connections, seconds=seconds, script=script
                    )
                    cpu = (cpu_seconds(server.pid) - cpu_before) / seconds
                    throughput[name].setdefault(f"c{connections}", []).append(rps)
                    throughput[name].setdefault(f"c{connections}_cpu", []).append(cpu)
        hello = throughput["hello-world FastAPI"]
        # The ratio of the medians shown (what a reader checks by dividing), and the range of
        # the per-round ratios (the machine's noise).
        ratios = {
            name: {f"c{c}": round(median(t[f"c{c}"]) / median(hello[f"c{c}"]), 3) for c in (1, 16)}
            for name, t in throughput.items()
        }
        spreads = {
            name: {
                f"c{c}": [
                    round(min(v / h for v, h in zip(t[f"c{c}"], hello[f"c{c}"], strict=True)), 3),
                    round(max(v / h for v, h in zip(t[f"c{c}"], hello[f"c{c}"], strict=True)), 3),
                ]
                for c in (1, 16)
            }
            for name, t in throughput.items()
        }
        fixed, batches = {}, {}
        for name, server in servers.items():
            if "hello" in name:
                fixed[name] = hey_fixed_rate(server.url + "/hello", None, rate=1000, seconds=10)
                continue
            fixed[name] = hey_fixed_rate(
                server.url + "/predict", one_row, rate=1000, seconds=10, log=server.log_path
            )
            batch_latency(server.url, batch, requests=5)  # warm-up
            batches[name] = batch_latency(server.url, batch, requests=200)
        reasons = reasons_cost(servers[COMPILED].url, one_row.read_bytes(), batch)
    finally:
        for server in servers.values():
            server.stop()

    summary = {
        name: {k: round(median(v), 1 if "cpu" not in k else 2) for k, v in t.items()}
        for name, t in throughput.items()
    }
    rows = []
    for name in servers:
        s = summary[name]
        f = fixed.get(name, {})
        b = batches.get(name, {})
        rows.append(
            [
                name,
                f"{s['c1']:.0f} ({ratios[name]['c1']:.0%}; {_span(spreads[name]['c1'])})",
                f"{s['c16']:.0f} ({ratios[name]['c16']:.0%}; {_span(spreads[name]['c16'])})",
                f"{s['c1_cpu']:.2f} / {s['c16_cpu']:.2f}",
                f"{f['p50_ms']} / {f['p99_ms']} ({f['achieved_rps']:.0f}/s, {f['errors']} err)",
                f"{f['server_p50_ms']} / {f['server_p99_ms']}" if "server_p99_ms" in f else "-",
                f"{b['server_p50_ms']} / {b['server_p99_ms']}" if b else "-",
            ]
        )
    markdown = table(
        [
            "server",
            "1 row req/s, c=1 (vs hello; rounds' range)",
            "c=16 (vs hello; rounds' range)",
            "server CPU c=1 / c=16",
            "1 row at 1,000 req/s, client p50 / p99 ms",
            "same, server p50 / p99 ms",
            "1,000 rows: server p50 / p99 ms",
        ],
        rows,
    )
    compiled = COMPILED
    goals = {
        "single_row_throughput_vs_hello >= 0.60": ratios[compiled]["c1"] >= 0.60,
        "single_row_throughput_vs_hello_at_c16 >= 0.45": ratios[compiled]["c16"] >= 0.45,
        "p99_at_1000_rps_client_ms <= 5": fixed[compiled]["p99_ms"] <= 5,
        "p99_at_1000_rps_server_ms <= 5": fixed[compiled]["server_p99_ms"] <= 5,
        "batch_1000_server_p50_ms <= 6": batches[compiled]["server_p50_ms"] <= 6,
        "batch_1000_server_p99_ms <= 30": batches[compiled]["server_p99_ms"] <= 30,
        "one row with 3 reasons: server p50 <= 2x a plain one-row request": reasons["one_row_ratio"]
        <= 2,
    }
    markdown += "\n\nReasons (`?reasons=3`), the compiled server, requests in turn:\n\n"
    markdown += _reasons_table(reasons)
    return {
        "throughput": throughput,
        "summary": summary,
        "ratio_vs_hello": ratios,
        "ratio_vs_hello_range": spreads,
        "fixed_rate": fixed,
        "batch_1000": batches,
        "reasons": reasons,
        "goals": goals,
        "markdown": markdown,
    }
