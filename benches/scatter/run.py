#!/usr/bin/env python3
"""Scatter point: a 3-shard `ORDER BY ... LIMIT 10` through shardgate versus the same query on
one server holding all the rows, in the same run.

    python3 benches/scatter/run.py [--rows 30000] [--seconds 10] [--threads 1,8]

Starts a sandbox (3 shards, no replicas, `sbtest1` sharded on `id`), loads the rows through
the proxy (split by row onto the shards) and directly into database `one` on shard s0's
server, then runs the query in closed loops from N threads against each target, alternating,
and prints queries per second, mean latency and the ratio. Needs PyMySQL and a release build
(it runs `cargo build --release`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pymysql

REPO = Path(__file__).resolve().parents[2]
QUERY = "SELECT id, c FROM sbtest1 WHERE k > {k} ORDER BY c DESC LIMIT 10"


def run(cmd: list[str], **kw) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def loop(port: int, db: str, seconds: float, threads: int) -> tuple[float, float]:
    """Queries per second and mean latency (ms) of `threads` closed loops."""
    stop = time.monotonic() + seconds
    counts = [0] * threads
    lat = [0.0] * threads

    def worker(i: int) -> None:
        c = pymysql.connect(host="127.0.0.1", port=port, user="app", password="app", database=db)
        cur = c.cursor()
        n = 0
        while time.monotonic() < stop:
            t0 = time.monotonic()
            cur.execute(QUERY.format(k=(n * 7919 + i) % 500))
            rows = cur.fetchall()
            assert len(rows) == 10, rows
            lat[i] += time.monotonic() - t0
            n += 1
        counts[i] = n
        c.close()

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    start = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.monotonic() - start
    total = sum(counts)
    return total / elapsed, 1000 * sum(lat) / max(total, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--threads", default="1,8")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    run(["cargo", "build", "--release", "--quiet"], cwd=REPO)
    binary = str(REPO / "target" / "release" / "shardgate")
    d = tempfile.mkdtemp(prefix="shardgate-scatter-")
    proxy = None
    try:
        run([binary, "sandbox", "up", "--dir", d, "--shards", "3", "--replicas", "0",
             "--sharded-table", "sbtest1:id"])
        cluster = json.loads(Path(d, "cluster.json").read_text())
        s0 = next(s["port"] for s in cluster["servers"] if s["shard"] == "s0" and s["role"] == "primary")
        cfg = Path(d, "shardgate.toml").read_text()
        port = int(cfg.split('listen = "127.0.0.1:')[1].split('"')[0])
        log = open(Path(d, "proxy.log"), "w")
        proxy = subprocess.Popen([binary, "serve", "--config", str(Path(d, "shardgate.toml"))],
                                 stdout=subprocess.DEVNULL, stderr=log)
        for _ in range(100):
            try:
                pymysql.connect(host="127.0.0.1", port=port, user="app", password="app", database="app").close()
                break
            except pymysql.err.OperationalError:
                time.sleep(0.1)
        ddl = ("CREATE TABLE sbtest1 (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, "
               "KEY k_1 (k))")
        root = pymysql.connect(host="127.0.0.1", port=s0, user="root", password="")
        root.cursor().execute("CREATE DATABASE IF NOT EXISTS one")
        root.close()
        targets = {"shardgate (3 shards)": (port, "app"), "one server": (s0, "one")}
        for port_, db in targets.values():
            c = pymysql.connect(host="127.0.0.1", port=port_, user="app", password="app", database=db, autocommit=True)
            cur = c.cursor()
            cur.execute(ddl)
            for start in range(0, a.rows, 500):
                rows = ", ".join(
                    f"({i}, {i * 31 % 1000}, 'row-{(i * 7919) % a.rows:08d}-{'x' * 100}')"
                    for i in range(start + 1, min(start + 501, a.rows + 1))
                )
                cur.execute(f"INSERT INTO sbtest1 (id, k, c) VALUES {rows}")
            c.close()
        results: dict = {}
        for threads in [int(t) for t in a.threads.split(",")]:
            for r in range(a.rounds):
                order = list(targets.items()) if r % 2 == 0 else list(reversed(targets.items()))
                for name, (port_, db) in order:
                    qps, ms = loop(port_, db, a.seconds, threads)
                    results.setdefault((threads, name), []).append((qps, ms))
                    print(f"threads {threads:2} round {r + 1} {name:22} {qps:9.1f} q/s  {ms:7.2f} ms", flush=True)
        print("\nmedians (best of rounds when 2):")
        summary = {}
        for threads in sorted({t for t, _ in results}):
            sg = max(results[(threads, "shardgate (3 shards)")])
            one = max(results[(threads, "one server")])
            ratio = sg[0] / one[0]
            summary[threads] = {"shardgate_qps": sg[0], "one_server_qps": one[0], "ratio": ratio,
                                "shardgate_ms": sg[1], "one_server_ms": one[1]}
            print(f"  {threads:2} threads: shardgate {sg[0]:.1f} q/s ({sg[1]:.2f} ms), one server "
                  f"{one[0]:.1f} q/s ({one[1]:.2f} ms): ratio {ratio:.3f}")
        if a.json:
            Path(a.json).write_text(json.dumps(summary, indent=2))
        return 0
    finally:
        if proxy:
            proxy.terminate()
            proxy.wait()
        subprocess.run([binary, "sandbox", "down", "--dir", d], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
