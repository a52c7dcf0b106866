#!/usr/bin/env python3
"""Scatter point: an N-shard `ORDER BY ... LIMIT 10` through shardgate versus the same query on
one server holding all the rows, in the same run, and the proxy's CPU per statement.

    python3 benches/scatter/run.py [--rows 30000] [--seconds 10] [--threads 1,8] [--shards 3]
    python3 benches/scatter/run.py --shards 2,4,8 --threads 8    # how the cost grows with shards

Per shard count, starts a sandbox (N shards, no replicas, `sbtest1` sharded on `id`), loads the rows through
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
QUERIES = {
    # Most rows match: each server sorts thousands of rows (the server's cost dominates).
    "range": "SELECT id, c FROM sbtest1 WHERE k > {k} ORDER BY c DESC LIMIT 10",
    # An index lookup of ~30 rows in all: the proxy's cost per shard shows.
    "indexed": "SELECT id, c FROM sbtest1 WHERE k = {k} ORDER BY c DESC LIMIT 10",
}
QUERY = QUERIES["range"]


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
            assert len(rows) == 10 or QUERY != QUERIES["range"], rows
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


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_shard_count(binary: str, shards: int, a: argparse.Namespace) -> dict:
    """A sandbox of `shards` shards: the query through the proxy against one server holding all
    the rows, alternating, per thread count. Returns {threads: summary}."""
    d = tempfile.mkdtemp(prefix=f"shardgate-scatter-{shards}-")
    proxy = None
    try:
        run([binary, "sandbox", "up", "--dir", d, "--shards", str(shards), "--replicas", "0",
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
        sg_name = f"shardgate ({shards} shards)"
        targets = {sg_name: (port, "app"), "one server": (s0, "one")}
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
        # The proxy's CPU while it serves nothing (monitor, timers), taken off what it used
        # during its runs: at a few statements per second it would be most of the figure.
        cpu0, t0 = cpu_seconds(proxy.pid), time.monotonic()
        time.sleep(3)
        idle_rate = (cpu_seconds(proxy.pid) - cpu0) / (time.monotonic() - t0)
        for threads in [int(t) for t in a.threads.split(",")]:
            for r in range(a.rounds):
                order = list(targets.items()) if r % 2 == 0 else list(reversed(targets.items()))
                for name, (port_, db) in order:
                    cpu0, t0 = cpu_seconds(proxy.pid), time.monotonic()
                    qps, ms = loop(port_, db, a.seconds, threads)
                    cpu, wall = cpu_seconds(proxy.pid) - cpu0, time.monotonic() - t0
                    us = None
                    if name == sg_name and qps:
                        us = max(cpu - idle_rate * wall, 0.0) * 1e6 / (qps * wall)
                    results.setdefault((threads, name), []).append((qps, ms, us))
                    extra = f"  proxy cpu {us:7.1f} us/statement" if us is not None else ""
                    print(f"shards {shards} threads {threads:2} round {r + 1} {name:22} {qps:9.1f} q/s  "
                          f"{ms:7.2f} ms{extra}", flush=True)
        summary = {}
        for threads in sorted({t for t, _ in results}):
            sg = max(results[(threads, sg_name)])
            one = max(results[(threads, "one server")])
            summary[threads] = {"shardgate_qps": sg[0], "one_server_qps": one[0], "ratio": sg[0] / one[0],
                                "shardgate_ms": sg[1], "one_server_ms": one[1], "proxy_cpu_us": sg[2]}
        return summary
    finally:
        if proxy:
            proxy.terminate()
            proxy.wait()
        subprocess.run([binary, "sandbox", "down", "--dir", d], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--threads", default="1,8")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shards", default="3", help="shard counts, each in a sandbox of its own: 2,4,8 shows "
                                                  "how the proxy's cost grows with the shards a statement reads")
    ap.add_argument("--query", choices=sorted(QUERIES), default="range",
                    help="range: most rows match (server-bound); indexed: ~30 rows by index (proxy-bound)")
    ap.add_argument("--json")
    a = ap.parse_args()
    global QUERY
    QUERY = QUERIES[a.query]
    run(["cargo", "build", "--release", "--quiet"], cwd=REPO)
    binary = str(REPO / "target" / "release" / "shardgate")
    all_: dict = {}
    for shards in [int(s) for s in a.shards.split(",")]:
        all_[shards] = one_shard_count(binary, shards, a)
    print("\nbest of rounds (ratio = shardgate / one server with all rows, same run):")
    for shards, summary in all_.items():
        for threads, x in summary.items():
            cpu = "-" if x["proxy_cpu_us"] is None else f"{x['proxy_cpu_us']:.1f}"
            print(f"  {shards} shards, {threads:2} threads: shardgate {x['shardgate_qps']:.1f} q/s "
                  f"({x['shardgate_ms']:.2f} ms), one server {x['one_server_qps']:.1f} q/s "
                  f"({x['one_server_ms']:.2f} ms): ratio {x['ratio']:.3f}; proxy cpu {cpu} us/statement")
    if a.json:
        Path(a.json).write_text(json.dumps(all_, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
