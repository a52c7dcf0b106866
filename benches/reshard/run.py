#!/usr/bin/env python3
"""Online-resharding benchmark (issue 15): add a shard under sysbench writes through the proxy.

Usage (from anywhere; the repo root is found relative to this file):

    python3 benches/reshard/run.py                    # 1,000,000 rows, 2 shards -> 3
    python3 benches/reshard/run.py --rows 200000      # quicker
    python3 benches/reshard/run.py --replicas 1 --keep --json out.json

What it does (see benches/reshard/README.md): a sandbox (2 shards, `sbtest1` sharded by id),
the release proxy, `sysbench oltp_write_only prepare` through the proxy, then one
`sysbench oltp_write_only run` through the proxy for the whole measurement: a baseline window,
`reshard start` (s2 from `sandbox add-shard`) and its copy, verify, the cutover (two probe writers,
one on keys that move and one on keys that stay, measure the longest single UPDATE from 2 s
before to 2 s after it), complete, an after window.

Only the standard library and PyMySQL. Exit status: 0 when the workflow ran to the end (the
bars are reported, not asserted: the machine is shared), 1 when something failed, 130 on
Ctrl-C / SIGTERM. Everything started is torn down unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pymysql

REPO = Path(__file__).resolve().parents[2]
# sysbench restarts a transaction on these instead of failing: deadlocks and lock waits
# (sysbench's own default), plus 1062 for --skip-trx (a DELETE and re-INSERT of one id by two
# threads race without a transaction). A cutover answers a doomed transaction with 1213.
IGNORE_ERRORS = "1213,1020,1205,1062"
REPORT_RE = re.compile(r"^\[\s*(\d+)s\s*\]\s+thds:\s*\d+\s+tps:\s*([\d.]+)\s+qps:\s*([\d.]+).*?"
                       r"lat \(ms,95%\):\s*([\d.]+)\s+err/s:\s*([\d.]+)\s+reconn/s:\s*([\d.]+)")


class BenchError(Exception):
    """Something failed to run; the figures cannot be trusted."""


def log(msg: str = "") -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def show_cmd(cmd: list[str]) -> str:
    return " ".join(shlex.quote(str(c)) for c in cmd)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="add a shard under sysbench writes through shardgate",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="sysbench --table-size (one table, sbtest1)")
    p.add_argument("--replicas", type=int, default=0, help="replicas per shard (sandbox up --replicas N)")
    p.add_argument("--threads", type=int, default=8, help="sysbench writer threads")
    p.add_argument("--warmup", type=int, default=5, help="seconds of writes before the baseline (not counted)")
    p.add_argument("--baseline", type=int, default=15, help="baseline window, seconds")
    p.add_argument("--after", type=int, default=10, help="window after complete, seconds")
    p.add_argument("--max-pause-ms", type=int, default=500, help="cutover max_pause_ms")
    p.add_argument("--attempts", type=int, default=10, help="cutover attempts at most")
    p.add_argument("--probe-margin", type=float, default=2.0, help="probe writer runs this long before and after the cutover")
    p.add_argument("--skip-trx", action="store_true",
                   help="sysbench --skip_trx=on (autocommit statements); default: its BEGIN..COMMIT transactions, "
                        "which span both shards, with multi_shard_transactions = \"best_effort\"")
    p.add_argument("--ps-mode", default="auto", choices=["auto", "disable"], help="sysbench --db-ps-mode")
    p.add_argument("--dir", type=Path, help="sandbox directory (default: a new one under $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="leave the sandbox and the proxy running")
    p.add_argument("--no-build", action="store_true", help="do not run cargo build --release")
    p.add_argument("--binary", type=Path, default=REPO / "target" / "release" / "shardgate")
    p.add_argument("--json", type=Path, help="also write every figure and the per-second reports here")
    p.add_argument("--bar-pause-ms", type=float, default=500.0, help="longest write wait bar")
    p.add_argument("--bar-ratio", type=float, default=0.7, help="tps during copy / baseline bar")
    a = p.parse_args(argv)
    if a.rows < 1 or a.threads < 1 or a.baseline < 1 or a.replicas < 0:
        p.error("--rows, --threads, --baseline must be positive, --replicas >= 0")
    return a


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

def run_checked(cmd: list, what: str, timeout: float) -> str:
    log(f"{what}: {show_cmd(cmd)}")
    try:
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} did not finish in {timeout:.0f} s")
    if r.returncode != 0:
        raise BenchError(f"{what} failed (status {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen, logfile: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"proxy exited with status {proc.returncode}; log:\n{tail(logfile)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"proxy not listening on {host}:{port} after {timeout:.0f} s")


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def stop_proc(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, wait: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Sysbench:
    """One `sysbench run` in the background; its per-second reports timestamped on arrival."""

    def __init__(self, cmd: list[str], logfile: Path):
        self.cmd = cmd
        self.logfile = logfile
        self.reports: list[dict] = []  # {"sec", "tps", "qps", "p95", "err", "reconn", "at"}
        self.fatal: list[str] = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.logfile, "w") as out:
            for line in self.proc.stdout:
                now = time.monotonic()
                out.write(line)
                out.flush()
                m = REPORT_RE.match(line.strip())
                if m:
                    self.reports.append({"sec": int(m.group(1)), "tps": float(m.group(2)), "qps": float(m.group(3)),
                                         "p95": float(m.group(4)), "err": float(m.group(5)),
                                         "reconn": float(m.group(6)), "at": now})
                elif "FATAL" in line:
                    self.fatal.append(line.strip())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def window(self, start: float, end: float) -> list[dict]:
        # A report covers the second before it arrived: it counts when that whole second lies
        # inside the window.
        return [r for r in self.reports if r["at"] - 1.0 >= start and r["at"] <= end]

    def stop(self) -> None:
        stop_proc(self.proc, signal.SIGINT)
        self.reader.join(timeout=5)


class Probe(threading.Thread):
    """Single-row autocommit UPDATEs of `ids` through the proxy in a tight loop; the longest one."""

    def __init__(self, host: str, port: int, user: str, password: str, ids: list[int]):
        super().__init__(daemon=True)
        self.args = dict(host=host, port=port, user=user, password=password, database="app",
                         autocommit=True, connect_timeout=10, read_timeout=60, write_timeout=60)
        self.ids = ids
        self.stop_flag = threading.Event()
        self.longest_ms = 0.0
        self.longest_at = 0.0  # monotonic start of the longest statement
        self.statements = 0
        self.errors: dict[str, int] = {}
        self.slow: list[tuple[float, float]] = []  # (start, ms) of statements of 20 ms and more
        self.conn = pymysql.connect(**self.args)

    def run(self) -> None:
        rng = random.Random(15)
        while not self.stop_flag.is_set():
            started = time.monotonic()
            try:
                if self.conn is None:
                    self.conn = pymysql.connect(**self.args)
                with self.conn.cursor() as c:
                    c.execute("UPDATE sbtest1 SET k=k+1 WHERE id=%s", (rng.choice(self.ids),))
                self.statements += 1
            except pymysql.MySQLError as e:
                key = f"{e.args[0]}: {e.args[1]}" if len(e.args) > 1 else str(e)
                self.errors[key] = self.errors.get(key, 0) + 1
                if isinstance(e, (pymysql.err.OperationalError, pymysql.err.InterfaceError)) and \
                        (not e.args or e.args[0] in (0, 2003, 2006, 2013)):
                    self.conn = None
            # A failed statement waited too: its time counts as a wait of the writer.
            ms = (time.monotonic() - started) * 1000
            if ms > self.longest_ms:
                self.longest_ms, self.longest_at = ms, started
            if ms >= 20:
                self.slow.append((started, ms))

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(timeout=70)
        if self.conn is not None:
            self.conn.close()


# ---------------------------------------------------------------------------------------------
# Admin API
# ---------------------------------------------------------------------------------------------

class Admin:
    def __init__(self, addr: str, token: str):
        self.base = f"http://{addr}"
        self.token = token

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | str]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                code, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            code, raw = e.code, e.read()
        except OSError as e:
            raise BenchError(f"{method} {path}: {e}")
        text = raw.decode(errors="replace")
        try:
            return code, json.loads(text)
        except json.JSONDecodeError:
            return code, text

    def post(self, path: str, body: dict) -> dict:
        code, doc = self.call("POST", path, body)
        if code != 200 or not isinstance(doc, dict):
            raise BenchError(f"POST {path} {json.dumps(body)}: HTTP {code}: {doc}")
        return doc

    def status(self) -> dict:
        code, doc = self.call("GET", "/api/v1/reshard/status?keyspace=app")
        if code != 200 or not isinstance(doc, dict):
            raise BenchError(f"status: HTTP {code}: {doc}")
        return doc


def brief(s: dict) -> str:
    """The parts of a status worth printing when something goes wrong."""
    keep = {k: s.get(k) for k in ("phase", "error", "rows_copied", "rows_estimated", "verify", "cutovers")}
    keep["tables"] = [{k: t.get(k) for k in ("source", "target", "rows_copied", "done")} for t in s.get("tables", [])]
    keep["streams"] = [{k: x.get(k) for k in ("name", "state", "transactions", "lag_seconds", "error")}
                       for x in s.get("streams", [])]
    return json.dumps(keep, indent=1)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dir = args.dir or Path(tempfile.mkdtemp(prefix="shardgate-reshard-bench-"))
        self.sandbox_up = False
        self.proxy: subprocess.Popen | None = None
        self.sysbench: Sysbench | None = None
        self.stopped_sysbench: Sysbench | None = None
        self.probe: Probe | None = None
        self.probe_staying: Probe | None = None
        self.commands: dict[str, str] = {}
        self.result: dict = {}

    def sg(self, *a) -> list:
        return [self.args.binary, *a]

    def setup(self) -> None:
        a = self.args
        if not a.no_build:
            run_checked(["cargo", "build", "--release", "--manifest-path", REPO / "Cargo.toml"], "build", 3600)
        cmd = self.sg("sandbox", "up", "--dir", self.dir, "--shards", "2", "--replicas", a.replicas,
                      "--sharded-table", "sbtest1:id")
        self.commands["sandbox"] = show_cmd(cmd)
        self.sandbox_up = True  # even a failed `up` may have started servers: `down` them
        run_checked(cmd, "sandbox up", 300)
        conf = tomllib.loads((self.dir / "shardgate.toml").read_text())
        self.listen = conf["proxy"]["listen"]
        self.admin = Admin(conf["proxy"]["admin_listen"], conf["proxy"]["admin_token"])
        self.user = conf["users"][0]["name"]
        self.password = conf["users"][0]["password"]
        text = (self.dir / "shardgate.toml").read_text()
        if not a.skip_trx:
            # sysbench's transactions write ids on both shards.
            text = text.replace("[keyspace.app]\n", "[keyspace.app]\nmulti_shard_transactions = \"best_effort\"\n", 1)
        self.config = self.dir / "bench-shardgate.toml"
        self.config.write_text(text)
        self.proxy_log = self.dir / "bench-proxy.log"
        cmd = self.sg("serve", "--config", self.config)
        self.commands["proxy"] = show_cmd(cmd)
        log(f"proxy: {self.commands['proxy']} (log {self.proxy_log})")
        self.proxy = subprocess.Popen([str(c) for c in cmd], stdout=open(self.proxy_log, "w"), stderr=subprocess.STDOUT)
        host, port = self.listen.rsplit(":", 1)
        self.host, self.port = host, int(port)
        wait_port(host, self.port, 30, self.proxy, self.proxy_log)

    def sysbench_cmd(self, command: str, extra: list[str]) -> list[str]:
        a = self.args
        return ["sysbench", "oltp_write_only", "--db-driver=mysql", f"--mysql-host={self.host}",
                f"--mysql-port={self.port}", f"--mysql-user={self.user}", f"--mysql-password={self.password}",
                "--mysql-db=app", "--tables=1", f"--table-size={a.rows}", "--auto_inc=off",
                f"--db-ps-mode={a.ps_mode}", f"--mysql-ignore-errors={IGNORE_ERRORS}",
                *(["--skip_trx=on"] if a.skip_trx else []), *extra, command]

    def prepare(self) -> None:
        cmd = self.sysbench_cmd("prepare", [])
        self.commands["prepare"] = show_cmd(cmd)
        t = time.monotonic()
        run_checked(cmd, "sysbench prepare", 3 * 3600)
        self.result["prepare_s"] = time.monotonic() - t
        log(f"prepared {self.args.rows} rows in {self.result['prepare_s']:.1f} s")
        out = run_checked(self.sg("sandbox", "add-shard", "--dir", self.dir), "sandbox add-shard", 300)
        m = re.search(r"--add\s+(\S+=\S+)", out)
        if not m:
            raise BenchError(f"no --add argument in the output of sandbox add-shard:\n{out}")
        self.add = m.group(1)
        log(f"new shard: {self.add}")

    def check_writers(self) -> None:
        if self.sysbench is not None and not self.sysbench.alive():
            raise BenchError("sysbench exited early:\n" + "\n".join(self.sysbench.fatal[:10] or [tail(self.sysbench.logfile)]))
        if self.proxy is not None and self.proxy.poll() is not None:
            raise BenchError(f"the proxy exited with status {self.proxy.returncode}:\n{tail(self.proxy_log)}")

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.check_writers()
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))

    def wait_status(self, what: str, limit: float, done, every: float = 1.0, each=None) -> dict:
        deadline = time.monotonic() + limit
        while True:
            self.check_writers()
            s = self.admin.status()
            if each:
                each(s)
            if s.get("phase") in ("failed", "cancelled", "rolled_back"):
                raise BenchError(f"reshard {s.get('phase')} while waiting for {what}:\n{brief(s)}\n"
                                 f"proxy log:\n{tail(self.proxy_log)}")
            if done(s):
                return s
            if time.monotonic() >= deadline:
                raise BenchError(f"timed out waiting for {what}:\n{brief(s)}\nproxy log:\n{tail(self.proxy_log)}")
            time.sleep(every)

    def probe_ids(self) -> tuple[list[int], list[int]]:
        """Ids that move (the new shard holds their copy) and ids that stay, 500 of each."""
        host, port = self.add.split("=", 1)[1].split(",", 1)[0].rsplit(":", 1)
        conn = pymysql.connect(host=host, port=int(port), user="root", password="", database="app",
                               connect_timeout=10)
        rng = random.Random(16)
        moving: list[int] = []
        staying: list[int] = []
        try:
            with conn.cursor() as c:
                while len(moving) < 500 or len(staying) < 500:
                    batch = [rng.randint(1, self.args.rows) for _ in range(1000)]
                    c.execute("SELECT id FROM sbtest1 WHERE id IN (%s)" % ",".join(map(str, batch)))
                    there = {row[0] for row in c.fetchall()}
                    moving += [i for i in batch if i in there][: 500 - len(moving)]
                    staying += [i for i in batch if i not in there][: 500 - len(staying)]
        finally:
            conn.close()
        return moving, staying

    def primaries(self) -> dict[str, tuple[str, int]]:
        doc = json.loads((self.dir / "cluster.json").read_text())
        return {x["shard"]: (x["host"], int(x["port"])) for x in doc["servers"] if x["role"] == "primary"}

    def diagnose_verify(self, first: dict) -> str:
        """A verify with differences: is the copy wrong, or did verify see writes in flight?

        Stops the writers, lets the streams catch up, verifies again and reads the first
        differing rows on both shards directly."""
        lines = ["verify found differences:"]
        for t in first.get("tables", []):
            lines.append(f"  {t.get('source')} -> {t.get('target')}: {t.get('rows_compared')} rows compared, "
                         + ", ".join(f"{k} {len(t.get(k) or [])} {(t.get(k) or [])[:10]}"
                                     for k in ("missing", "extra", "different")))
        if self.sysbench is not None:
            self.sysbench.stop()
            self.stopped_sysbench, self.sysbench = self.sysbench, None  # stopped on purpose: check_writers must not fail on it
        time.sleep(3)
        s = self.wait_status("the streams to catch up (writers stopped)", 120,
                             lambda s: all(x.get("state") != "running" or (x.get("behind_transactions") or 0) == 0
                                           for x in s.get("streams", [])))
        lines.append("streams: " + json.dumps([{k: x.get(k) for k in ("name", "state", "applied_position",
                                                                       "transactions", "behind_transactions")}
                                                for x in s.get("streams", [])]))
        try:
            prim = self.primaries()
            for t in first.get("tables", []):
                ids = [int(i) for k in ("missing", "extra", "different") for i in (t.get(k) or [])][:5]
                for shard in (t.get("source"), t.get("target")):
                    if not ids or shard not in prim:
                        continue
                    c = pymysql.connect(host=prim[shard][0], port=prim[shard][1], user="root", password="",
                                        database="app")
                    with c.cursor() as cur:
                        cur.execute("SELECT id, k, LEFT(c, 20), LEFT(pad, 20) FROM sbtest1 WHERE id IN ("
                                    + ",".join(map(str, ids)) + ") ORDER BY id")
                        lines.append(f"  {shard} rows {ids}: {cur.fetchall()}")
                    c.close()
        except (OSError, KeyError, ValueError, pymysql.MySQLError) as e:
            lines.append(f"  (could not read the rows directly: {e})")
        self.admin.post("/api/v1/reshard/verify", {"keyspace": "app"})
        s = self.wait_status("verify again", 600,
                             lambda s: (s.get("verify") or {}).get("state") not in (None, "running"))
        v = s["verify"]
        lines.append(f"verify again with the writers stopped: {v.get('state')}")
        for t in v.get("tables", []):
            lines.append(f"  {t.get('source')} -> {t.get('target')}: "
                         + ", ".join(f"{k} {len(t.get(k) or [])} {(t.get(k) or [])[:10]}"
                                     for k in ("missing", "extra", "different")))
        lines.append("proxy log (end):\n" + tail(self.proxy_log, 20))
        return "\n".join(lines)

    def measure(self) -> None:
        a, r = self.args, self.result
        cmd = self.sysbench_cmd("run", [f"--threads={a.threads}", "--report-interval=1", "--time=0",
                                        "--rand-type=uniform"])
        self.commands["run"] = show_cmd(cmd)
        log(f"sysbench run (background): {self.commands['run']}")
        self.sysbench = Sysbench(cmd, self.dir / "bench-sysbench.log")
        self.sleep(a.warmup)
        t = time.monotonic()
        log(f"baseline: {a.baseline} s")
        self.sleep(a.baseline)
        r["baseline_window"] = (t, time.monotonic())

        # Start and copy.
        log(f"reshard start --add {self.add}")
        copy_start = time.monotonic()
        self.admin.post("/api/v1/reshard/start", {"keyspace": "app", "add": self.add})
        progress: list[tuple[float, int]] = []

        def note(s: dict) -> None:
            progress.append((time.monotonic() - copy_start, int(s.get("rows_copied") or 0)))
            if len(progress) % 10 == 0:
                log(f"  copy: {progress[-1][1]:,} of ~{int(s.get('rows_estimated') or 0):,} rows, phase {s.get('phase')}")

        s = self.wait_status("the copy", 3 * 3600, lambda s: s.get("phase") == "running", each=note)
        copy_end = time.monotonic()
        r["copy_window"] = (copy_start, copy_end)
        r["copy_s"] = copy_end - copy_start
        r["rows_copied"] = int(s.get("rows_copied") or 0)
        r["rows_estimated"] = int(s.get("rows_estimated") or 0)
        r["rows_read"] = sum(int(t.get("rows_read") or 0) for t in s.get("tables", []))
        r["copy_rows_per_s"] = r["rows_copied"] / r["copy_s"]
        r["copy_progress"] = progress
        log(f"copy done: {r['rows_copied']:,} rows copied ({r['rows_read']:,} read) in {r['copy_s']:.1f} s "
            f"= {r['copy_rows_per_s']:,.0f} rows/s")

        # Verify.
        t = time.monotonic()
        self.admin.post("/api/v1/reshard/verify", {"keyspace": "app"})
        s = self.wait_status("verify", 1800, lambda s: (s.get("verify") or {}).get("state") not in (None, "running"))
        r["verify_s"] = time.monotonic() - t
        r["verify_window"] = (t, time.monotonic())
        r["verify"] = s.get("verify")
        if s["verify"].get("state") != "clean":
            raise BenchError(self.diagnose_verify(s["verify"]))
        log(f"verify clean in {r['verify_s']:.1f} s")

        # Cutover, with the probe writer around it.
        self.wait_status("the streams", 300, lambda s: any(x.get("state") == "running" for x in s.get("streams", [])))
        moving, staying = self.probe_ids()
        self.probe = Probe(self.host, self.port, self.user, self.password, moving)
        self.probe_staying = Probe(self.host, self.port, self.user, self.password, staying)
        self.probe.start()
        self.probe_staying.start()
        self.sleep(a.probe_margin)
        attempts, conflicts = [], 0
        cut_start = time.monotonic()
        while len(attempts) < a.attempts:
            code, doc = self.admin.call("POST", "/api/v1/reshard/cutover",
                                        {"keyspace": "app", "max_pause_ms": a.max_pause_ms})
            if code == 409:
                conflicts += 1
                log(f"  cutover: 409 {doc}")
                if conflicts > 60:
                    raise BenchError(f"cutover refused 60 times; last: {doc}")
                time.sleep(0.5)
                continue
            if code != 200 or not isinstance(doc, dict):
                raise BenchError(f"cutover: HTTP {code}: {doc}\nproxy log:\n{tail(self.proxy_log)}")
            attempts.append(doc)
            log(f"  cutover attempt {len(attempts)}: outcome {doc.get('outcome')}, pause {doc.get('pause_ms')} ms"
                + (f", {doc.get('reason') or doc.get('error')}" if doc.get("outcome") != "switched" else ""))
            if doc.get("outcome") == "switched":
                break
            time.sleep(0.3)
        cut_end = time.monotonic()
        self.sleep(a.probe_margin)
        self.probe.stop()
        self.probe_staying.stop()
        r["cutover_attempts"] = attempts
        r["cutover_conflicts"] = conflicts

        def probed(p: Probe) -> dict:
            return {"longest_ms": p.longest_ms, "statements": p.statements, "errors": p.errors,
                    "longest_at_s_from_cutover": p.longest_at - cut_start,
                    "cutover_call_s": cut_end - cut_start,
                    # The longest statement that was running at some point of the cutover
                    # call (what the cutover itself made a writer wait).
                    "longest_in_cutover_ms": max([ms for st, ms in p.slow
                                                  if st <= cut_end and st + ms / 1000 >= cut_start], default=0.0),
                    "slow": [(round(st - cut_start, 3), round(ms, 1)) for st, ms in p.slow]}

        # Keys that move wait for the cutover; keys that stay should not.
        r["probe"] = probed(self.probe)
        r["probe_staying"] = probed(self.probe_staying)
        if not attempts or attempts[-1].get("outcome") != "switched":
            raise BenchError(f"cutover never switched in {a.attempts} attempts: {attempts[-1:]}")
        sw = attempts[-1]
        log(f"switched after {len(attempts)} attempt(s): pause {sw.get('pause_ms')} ms; longest write of a moving "
            f"key {self.probe.longest_ms:.1f} ms ({self.probe.statements} statements, errors {self.probe.errors}), "
            f"of a key that stays {self.probe_staying.longest_ms:.1f} ms ({self.probe_staying.statements} statements, "
            f"errors {self.probe_staying.errors})")

        # Complete, then the after window.
        t = time.monotonic()
        self.admin.post("/api/v1/reshard/complete", {"keyspace": "app"})
        s = self.wait_status("complete", 1800, lambda s: s.get("phase") == "completed")
        r["complete_s"] = time.monotonic() - t
        r["rows_deleted"] = s.get("rows_deleted")
        log(f"completed in {r['complete_s']:.1f} s ({s.get('rows_deleted')} rows deleted from the old shards)")
        t = time.monotonic()
        self.sleep(a.after)
        r["after_window"] = (t, time.monotonic())
        self.check_writers()

    def report(self) -> dict:
        r, sb = self.result, self.sysbench or self.stopped_sysbench
        out: dict = {}
        if sb is None:
            return out
        for name in ("baseline", "copy", "verify", "after"):
            w = r.get(f"{name}_window")
            if not w:
                continue
            rep = sb.window(*w)
            out[name] = {"seconds": len(rep), "median_tps": median([x["tps"] for x in rep]),
                         "mean_tps": statistics.fmean([x["tps"] for x in rep]) if rep else None,
                         "median_p95_ms": median([x["p95"] for x in rep]),
                         "errors": sum(x["err"] for x in rep)}
        base = (out.get("baseline") or {}).get("median_tps")
        during = (out.get("copy") or {}).get("median_tps")
        out["copy_ratio"] = during / base if base and during is not None else None
        out["sysbench_errors"] = sum(x["err"] for x in sb.reports)
        out["sysbench_reconnects"] = sum(x["reconn"] for x in sb.reports)
        out["sysbench_fatal"] = sb.fatal
        return out

    def teardown(self) -> None:
        for p in (self.probe, self.probe_staying):
            if p is not None and p.is_alive():
                p.stop()
        if self.sysbench is not None:
            self.sysbench.stop()
        if self.args.keep:
            log(f"--keep: sandbox in {self.dir}, proxy pid {self.proxy.pid if self.proxy else '-'} "
                f"(config {getattr(self, 'config', '-')}); stop with: kill <pid>; "
                f"{self.args.binary} sandbox down --dir {self.dir}")
            return
        stop_proc(self.proxy)
        if self.sandbox_up:
            r = subprocess.run([str(c) for c in self.sg("sandbox", "down", "--dir", self.dir)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                log(f"sandbox down failed: {r.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    log(f"reshard benchmark: {args.rows:,} rows, {args.threads} writer threads, {args.replicas} replica(s); "
        f"host {os.cpu_count()} CPUs, load average {load}")
    bench = Bench(args)
    status, failure = 0, None
    try:
        log(f"dir: {bench.dir}")
        bench.setup()
        bench.prepare()
        bench.measure()
    except KeyboardInterrupt:
        status, failure = 130, "interrupted"
    except BenchError as e:
        status, failure = 1, str(e)
        log(f"FAILED: {e}")
    finally:
        try:
            figures = bench.report()
        finally:
            bench.teardown()

    r = bench.result
    log("")
    log("Results")
    if "copy_s" in r:
        log(f"  copy: {r['rows_copied']:,} rows copied ({r['rows_read']:,} read) in {r['copy_s']:.1f} s: "
            f"{r['copy_rows_per_s']:,.0f} rows copied/s")
    for name in ("baseline", "copy", "verify", "after"):
        w = figures.get(name)
        if w:
            log(f"  writers {name:8s}: median tps {fmt(w['median_tps'])} (mean {fmt(w['mean_tps'])}) over {w['seconds']} s, "
                f"median p95 {fmt(w['median_p95_ms'], '.2f')} ms, errors {w['errors']:.0f}")
    if figures.get("copy_ratio") is not None:
        log(f"  writers during copy / baseline: {figures['copy_ratio']:.2f} (bar >= {args.bar_ratio}): "
            f"{'meets' if figures['copy_ratio'] >= args.bar_ratio else 'BELOW'}")
    if "verify_s" in r:
        log(f"  verify: clean in {r['verify_s']:.1f} s")
    if r.get("cutover_attempts"):
        sw = r["cutover_attempts"][-1]
        pr = r["probe"]
        log(f"  cutover: {len(r['cutover_attempts'])} attempt(s) ({r['cutover_conflicts']} refused with 409), "
            f"outcome {sw.get('outcome')}, pause_ms {sw.get('pause_ms')}")
        for label, pr in (("moving keys", r["probe"]), ("keys that stay", r["probe_staying"])):
            log(f"  probe writer, {label}: longest single UPDATE {pr['longest_ms']:.1f} ms (bar < {args.bar_pause_ms:g}): "
                f"{'meets' if pr['longest_ms'] < args.bar_pause_ms else 'ABOVE'}; {pr['statements']} statements, "
                f"errors {pr['errors'] or 0}")
            log(f"    longest UPDATE running during the cutover call ({pr['cutover_call_s'] * 1000:.0f} ms): "
                f"{pr['longest_in_cutover_ms']:.1f} ms (0: under 20 ms); the longest overall started "
                f"{pr['longest_at_s_from_cutover']:+.2f} s from the cutover call")
    if "complete_s" in r:
        log(f"  complete: {r['complete_s']:.1f} s, {r.get('rows_deleted')} rows deleted")
    if "sysbench_errors" in figures:
        log(f"  sysbench errors (ignored and retried, whole run): {figures['sysbench_errors']:.0f}, "
            f"reconnects {figures['sysbench_reconnects']:.0f}, fatal {len(figures['sysbench_fatal'])}")
    log("Commands:")
    for k, v in bench.commands.items():
        log(f"  {k}: {v}")
    if args.json:
        doc = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "host": {"cpus": os.cpu_count(), "load": load, "kernel": platform.release()},
               "result": r, "figures": figures, "commands": bench.commands,
               "reports": bench.sysbench.reports if bench.sysbench else [],
               "status": status, "failure": failure}
        args.json.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        log(f"wrote {args.json}")
    log(f"{'OK' if status == 0 else 'FAILED'}: {failure or 'the workflow ran to completed'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
