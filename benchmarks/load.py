"""The local HTTP API (devtools/local_api.py, what `make serve` runs) under concurrent load from a second process
on loopback (part of `python -m benchmarks`).

The benchmark serves template.yaml's routes with `LocalApi` in its own process; this module, run as
`python -m benchmarks.load`, is the load generator: a pool of threads, each with its own keep-alive HTTP
connection, POSTing the same /predict body until a request count or a time limit, whichever comes first. It
prints one JSON line: requests, errors (any status but 200, or a failed connection), requests/s, p50, p99.
Stdlib only: nothing to install (wrk would need root to install and a Lua script to POST).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.report import Row, seconds, verdict


def generate(url: str, body: bytes, concurrency: int, requests: int, limit_seconds: float) -> dict[str, Any]:
    target = urlsplit(url)
    host, port, path = target.hostname or "127.0.0.1", target.port or 80, target.path or "/"
    headers = {"Content-Type": "application/json"}
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    started = time.perf_counter()
    deadline = started + limit_seconds

    def take() -> bool:
        nonlocal issued
        with lock:
            if issued >= requests or time.perf_counter() >= deadline:
                return False
            issued += 1
            return True

    def worker() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=30)
        while take():
            begin = time.perf_counter()
            try:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                outcome = str(response.status)
            except (OSError, http.client.HTTPException) as error:
                outcome = type(error).__name__
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=30)
            elapsed = time.perf_counter() - begin
            with lock:
                latencies.append(elapsed)
                statuses[outcome] += 1
        connection.close()

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    duration = time.perf_counter() - started
    done = len(latencies)
    cuts = statistics.quantiles(latencies, n=100) if done >= 2 else [0.0] * 99
    return {
        "requests": done,
        "errors": done - statuses.get("200", 0),
        "statuses": dict(statuses),
        "seconds": round(duration, 3),
        "requests_per_second": round(done / duration, 1) if duration else 0.0,
        "p50": cuts[49],
        "p99": cuts[98],
        "concurrency": concurrency,
    }


def run(url: str, body: bytes, concurrency: int, requests: int, limit_seconds: float, scratch: Path) -> Row:
    """Drive the API at `url` from a second process; one row for the table."""
    body_file = scratch / "load-body.json"
    body_file.write_bytes(body)
    command = [sys.executable, "-m", "benchmarks.load", url, str(body_file)]
    command += ["--concurrency", str(concurrency), "--requests", str(requests), "--seconds", str(limit_seconds)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=limit_seconds + 60)  # noqa: S603
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Row(
        "api",
        f"local API, POST /predict (1 row), {concurrency} clients, second process",
        f"{result['requests_per_second']:.0f} req/s",
        f"p50 {seconds(result['p50'])}, p99 {seconds(result['p99'])}",
        f"{result['errors']} errors / {result['requests']}",
        "0 errors",
        verdict(result["errors"] == 0 and result["requests"] > 0),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.splitlines()[0])
    parser.add_argument("url", help="e.g. http://127.0.0.1:3000/predict")
    parser.add_argument("body", type=Path, help="file with the JSON body to POST")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000, help="stop after this many requests")
    parser.add_argument("--seconds", type=float, default=20.0, help="or after this long")
    args = parser.parse_args(argv)
    result = generate(args.url, args.body.read_bytes(), args.concurrency, args.requests, args.seconds)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
