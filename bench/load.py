"""A bounded load run on real uvicorn: mixed traffic, errors counted, memory watched across runs.

Traffic per 100 requests: 89 single rows, 1 batch of 1,000 rows, 10 invalid requests (expected
400). An "error" is anything else: a 5xx, an unexpected status, a socket error or a timeout.
Memory is the server's RSS before and after each run of ~100k requests; it must level off.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.common import Uvicorn, census_features, cpu_seconds, rss_mib, table
from bench.common import census as load_dataset

FEATURES = census_features()

ROOT = Path(__file__).resolve().parent.parent

LUA = """
local single = [==[{single}]==]
local batch = [==[{batch}]==]
local invalid = [==[{invalid}]==]
local counter = 0
ok, rejected, unexpected = 0, 0, 0
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function request()
  counter = counter + 1
  local body = single
  if counter % 100 == 0 then body = batch elseif counter % 10 == 5 then body = invalid end
  return wrk.format("POST", "/predict", {{["Content-Type"] = "application/json"}}, body)
end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 elseif status == 400 then rejected = rejected + 1
  else unexpected = unexpected + 1 end
end
function done(summary, latency, requests)
  local o, r, u = 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); r = r + t:get("rejected"); u = u + t:get("unexpected")
  end
  io.write(string.format("COUNTS ok=%d rejected=%d unexpected=%d\\n", o, r, u))
  local p50, p99 = latency:percentile(50) / 1000, latency:percentile(99) / 1000
  io.write(string.format("LATENCY p50=%.3f p99=%.3f\\n", p50, p99))
end
"""


def _bodies(artifacts: Path) -> tuple[str, str, str]:
    row = json.loads((artifacts / "sample_rows.json").read_text())["rows"][0]
    frame = load_dataset(ROOT / "data" / "adult_synth.csv").features.head(1000)
    batch = frame[list(FEATURES)].to_json(orient="records")
    invalid = json.dumps([{**row, "age": "forty", "workclass": "Pirate"}])
    return json.dumps([row]), batch, invalid


def run(
    artifacts: Path, *, seconds: int = 40, runs: int = 3, connections: int = 8
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    single, batch, invalid = _bodies(artifacts)
    script = work / "mixed.lua"
    script.write_text(LUA.format(single=single, batch=batch, invalid=invalid))
    server = Uvicorn(
        "src.app:app",
        work / "server.log",
        "/ready",
        ARTIFACTS_DIR=str(artifacts),
        PREDICTION_LOG_DIR=str(work / "log"),
    )
    results = []
    try:
        for i in range(runs):
            rss_before, cpu_before = rss_mib(server.pid), cpu_seconds(server.pid)
            out = subprocess.run(
                [
                    "wrk",
                    "-t1",
                    f"-c{connections}",
                    f"-d{seconds}s",
                    "--timeout",
                    "5s",
                    "-s",
                    str(script),
                    server.url + "/predict",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            counts = dict(re.findall(r"(\w+)=(\d+)", out.split("COUNTS", 1)[1].splitlines()[0]))
            latency = dict(
                re.findall(r"(p\d+)=([\d.]+)", out.split("LATENCY", 1)[1].splitlines()[0])
            )
            socket_errors = re.search(r"Socket errors: (.*)", out)
            total = sum(int(v) for v in counts.values())
            results.append(
                {
                    "run": i + 1,
                    "requests": total,
                    "requests_per_s": round(total / seconds, 1),
                    "p50_ms": float(latency["p50"]),
                    "p99_ms": float(latency["p99"]),
                    "ok_200": int(counts["ok"]),
                    "rejected_400": int(counts["rejected"]),
                    "errors": int(counts["unexpected"]) + (1 if socket_errors else 0),
                    "socket_errors": socket_errors.group(1) if socket_errors else "",
                    "server_cpu": round((cpu_seconds(server.pid) - cpu_before) / seconds, 2),
                    "rss_before_mib": round(rss_before, 1),
                    "rss_after_mib": round(rss_mib(server.pid), 1),
                }
            )
    finally:
        server.stop()
    growth_last = results[-1]["rss_after_mib"] - results[-1]["rss_before_mib"]
    markdown = table(
        [
            "run",
            "requests",
            "req/s",
            "p50 ms",
            "p99 ms",
            "200",
            "400 (expected)",
            "errors",
            "server CPU",
            "RSS before -> after MiB",
        ],
        [
            [
                r["run"],
                f"{r['requests']:,}",
                r["requests_per_s"],
                r["p50_ms"],
                r["p99_ms"],
                f"{r['ok_200']:,}",
                f"{r['rejected_400']:,}",
                r["errors"],
                r["server_cpu"],
                f"{r['rss_before_mib']} -> {r['rss_after_mib']}",
            ]
            for r in results
        ],
    )
    return {
        "runs": results,
        "goals": {
            "zero errors": all(r["errors"] == 0 for r in results),
            "memory levels off (last run grows < 5 MiB)": growth_last < 5,
        },
        "markdown": markdown,
    }
