"""A webhook receiver that records what it is sent: Alertmanager's alerts and the agent's
incidents and pages, one JSON line each with the time it arrived (the stack's stand-in for a
paging service)."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_LOCK = threading.Lock()


def handler_for(out: Path) -> type[BaseHTTPRequestHandler]:
    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            entry = {
                "received": time.time(),
                "path": self.path,
                "idempotency_key": self.headers.get("Idempotency-Key"),
                "body": body,
            }
            with _LOCK, out.open("a") as f:
                f.write(json.dumps(entry) + "\n")
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    return Recorder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a container")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer((args.host, args.port), handler_for(args.out))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
