#!/usr/bin/env python3
"""End-to-end load benchmark: sysbench through shardgate vs HAProxy (L4) vs MariaDB direct.

Usage (from anywhere; the repo root is found relative to this file):

    python3 benches/load/run.py                      # full run (~25 min with defaults)
    python3 benches/load/run.py --quick              # smoke test (~1 min)
    python3 benches/load/run.py --duration 20 --rounds 3 --threads 1,8,32 \
        --tests oltp_point_select,oltp_read_only --idle-conns 1000 --json out.json

    # Read/write split (issue 3): a primary and 2 replicas; the proxy spreads reads over the
    # replicas, "direct" is the primary alone. A test spec TEST+opt[=value] passes --opt to
    # sysbench: +skip_trx runs every query in autocommit mode, which is what lets reads leave
    # the primary (a BEGIN ... COMMIT transaction stays on the primary).
    python3 benches/load/run.py --replicas 2 --targets direct,shardgate --threads 8,32 \
        --tests oltp_read_only,oltp_read_only+skip_trx,oltp_read_write,oltp_read_write+skip_trx \
        --idle-conns 2000 --json split.json

    # Topology in etcd against the state file, same run: nothing on the hot path waits for etcd.
    python3 benches/load/run.py --targets direct,shardgate,shardgate-etcd --tests oltp_point_select \
        --threads 8,32 --idle-conns 0

    # Against servers you run yourself (no sandbox; builds shardgate only if it is needed):
    python3 benches/load/run.py --external-primary 127.0.0.1:23306 --targets direct,haproxy

See benches/load/README.md for what is measured and how to read it. Only the standard library
and PyMySQL are used; `sysbench` and `haproxy` come from Debian.

Exit status: 0 when every run completed (the bars are *reported*, not asserted: the machine is
shared and noisy), 1 when something failed to run (build, sandbox, sysbench error, a proxy
died, idle connections refused), 130 on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import tomllib  # Python 3.11+
except ImportError:  # pragma: no cover - older Pythons fall back to a regex
    tomllib = None

import pymysql

REPO = Path(__file__).resolve().parents[2]
TARGETS = ("direct", "haproxy", "shardgate", "shardgate-etcd", "shardgate-ryw")
DEFAULT_TARGETS = ("direct", "haproxy", "shardgate")
# Targets that are a shardgate process of ours: `shardgate` keeps its topology in the state file,
# `shardgate-etcd` in the sandbox etcd (`[topology] store = "etcd"`), over the same servers;
# `shardgate-ryw` is `shardgate` with `[routing] consistency = "read_your_writes"` whatever
# --consistency says, so that the two consistencies are compared in the same rounds.
PROXY_TARGETS = ("shardgate", "shardgate-etcd", "shardgate-ryw")
# sysbench tests that write. Deadlocks and lock wait timeouts are normal for them: sysbench
# restarts the transaction and counts an "ignored error" (reported as restarts, not a failure).
WRITE_TESTS = {"oltp_read_write", "oltp_write_only", "oltp_insert", "oltp_delete",
               "oltp_update_index", "oltp_update_non_index"}
SYSBENCH_IGNORE_DEFAULT = "1213,1020,1205"  # sysbench's own default --mysql-ignore-errors
SYSBENCH_SHARE = Path("/usr/share/sysbench")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


class BenchError(Exception):
    """Something failed to run; the benchmark cannot be trusted and exits non-zero."""


def log(msg: str = "") -> None:
    print(msg, flush=True)


def show_cmd(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------

def csv_list(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def int_list(s: str) -> list[int]:
    try:
        return [int(x) for x in csv_list(s)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {s!r}")


class TestSpec:
    """`TEST` or `TEST+opt[=value]+...`: a sysbench test and extra `--opt=value` run options.

    `+skip_trx` alone means `--skip_trx=on`. The spec string is the test's label in the output.
    """

    OPT_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)(?:=([A-Za-z0-9_.:/-]*))?$")

    def __init__(self, spec: str):
        parts = spec.split("+")
        self.label, self.test = spec, parts[0]
        self.opts: dict[str, str] = {}
        if not re.fullmatch(r"[A-Za-z0-9_]+", self.test):
            raise argparse.ArgumentTypeError(f"bad sysbench test name in {spec!r}")
        for part in parts[1:]:
            m = self.OPT_RE.match(part)
            if not m:
                raise argparse.ArgumentTypeError(f"bad option {part!r} in test spec {spec!r} (want +opt or +opt=value)")
            self.opts[m.group(1)] = "on" if m.group(2) is None else m.group(2)

    @property
    def writes(self) -> bool:
        return self.test in WRITE_TESTS

    @property
    def autocommit(self) -> bool:
        return self.opts.get("skip_trx", "off") in ("on", "true", "1", "yes")

    def run_opts(self) -> list[str]:
        opts = dict(self.opts)
        if self.writes and self.autocommit and "mysql-ignore-errors" not in opts:
            # Without a transaction, two threads deleting and re-inserting the same id race
            # (sysbench's oltp_common does DELETE then INSERT of one id): a duplicate key
            # (1062) is expected there, directly as through any proxy. Restart the event.
            opts["mysql-ignore-errors"] = SYSBENCH_IGNORE_DEFAULT + ",1062"
        return [f"--{k}={v}" for k, v in opts.items()]

    def __repr__(self) -> str:
        return self.label


def test_specs(s: str) -> list[TestSpec]:
    return [TestSpec(x) for x in csv_list(s)]


def host_port(s: str) -> tuple[str, int]:
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {s!r}")
    if int(port) == 3306:
        raise argparse.ArgumentTypeError("port 3306 is reserved for the system MariaDB; refusing to benchmark it")
    return host, int(port)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="sysbench through shardgate vs HAProxy (TCP) vs MariaDB direct",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=int, help="seconds per sysbench run (default: 20; --quick: 5)")
    p.add_argument("--rounds", type=int, help="rounds per (test, threads, target); the median is reported (default: 3; --quick: 1)")
    p.add_argument("--threads", type=int_list, help="sysbench thread counts (default: 1,8,32; --quick: 8)")
    p.add_argument("--tests", type=test_specs, default="oltp_point_select,oltp_read_only",
                   help="sysbench tests (oltp_* tests share the tables one prepare creates); TEST+opt[=value] "
                        "adds --opt=value to its runs, e.g. oltp_read_only+skip_trx (autocommit reads, which the "
                        "read/write split may send to replicas; in BEGIN..COMMIT they stay on the primary)")
    p.add_argument("--targets", type=csv_list, default=list(DEFAULT_TARGETS),
                   help="subset of direct,haproxy,shardgate,shardgate-etcd,shardgate-ryw (shardgate-etcd: a second proxy "
                        "over the same sandbox with its topology in the sandbox etcd; shardgate keeps the state file; "
                        "shardgate-ryw: a second proxy with consistency read_your_writes)")
    p.add_argument("--idle-conns", type=int, help="idle client connections for the memory check, 0 skips it (default: 1000; --quick: 200)")
    p.add_argument("--replicas", type=int, default=0,
                   help="replicas of the sandbox primary (shardgate sandbox up --replicas N); 'direct' and 'haproxy' "
                        "still go to the primary alone, shardgate gets the replicas (read/write split)")
    p.add_argument("--cache-ttl-ms", type=int,
                   help="turn the result cache on for every read ([[cache.rules]] ttl_ms = N) and report its hit "
                        "ratio (admin API) and the proxy's memory after each shardgate run")
    p.add_argument("--cache-max-mib", type=int, default=64, help="[cache] max_bytes with --cache-ttl-ms, in MiB")
    p.add_argument("--consistency", default="eventual", choices=["eventual", "read_your_writes"],
                   help="[routing] consistency in the shardgate config the bench writes")
    p.add_argument("--pool-max", type=int,
                   help="[pool] max_connections per server in the bench config (default: max(1000, idle-conns + 200), "
                        "room for one backend connection per idle client; with multiplexing they need none)")
    p.add_argument("--root-user", default="root",
                   help="account for the server-side counters (PROCESSLIST, SHOW GLOBAL STATUS) read directly on each server")
    p.add_argument("--root-password", default="")
    p.add_argument("--warmup", type=int, help="seconds of unrecorded warm-up per (test, target) (default: 5; --quick: 2)")
    p.add_argument("--tables", type=int, default=4, help="sysbench --tables")
    p.add_argument("--table-size", type=int, default=10000, help="sysbench --table-size")
    p.add_argument("--ps-mode", default="auto", choices=["auto", "disable"], help="sysbench --db-ps-mode (auto = server-side prepared statements)")
    p.add_argument("--haproxy-threads", type=int, default=os.cpu_count() or 1,
                   help="HAProxy nbthread; default = CPUs, like shardgate's multi-threaded runtime")
    p.add_argument("--pin-client", type=int, metavar="CPU",
                   help="run sysbench on this CPU only and the servers, proxies and this script on the "
                        "others: a client host of its own, as in a real deployment (default: all share all CPUs)")
    p.add_argument("--json", type=Path, help="also write all results (raw runs, medians, memory, commands) here")
    p.add_argument("--quick", action="store_true", help="smoke test: --duration 5 --rounds 1 --threads 8 --idle-conns 200 --warmup 2 "
                   "(explicit options still win)")
    p.add_argument("--no-build", action="store_true", help="do not run cargo build --release")
    p.add_argument("--binary", type=Path, default=REPO / "target" / "release" / "shardgate", help="shardgate binary")
    p.add_argument("--external-primary", type=host_port, metavar="HOST:PORT",
                   help="use this running MariaDB instead of a sandbox (needs user app/app and database app)")
    p.add_argument("--external-proxy", type=host_port, metavar="HOST:PORT",
                   help="use this running shardgate instead of starting one (no CPU/memory numbers)")
    p.add_argument("--proxy-workers", type=int, default=None,
                   help="[proxy] workers of the generated proxy config (0: one per CPU)")
    p.add_argument("--proxy-config", type=Path,
                   help="shardgate config to serve as it is (default: bench-shardgate.toml, the sandbox's config, or one "
                        "generated for --external-primary, with [pool], [routing] and [monitor] set from the options)")
    p.add_argument("--skip-prepare", action="store_true", help="reuse existing sbtest tables instead of cleanup + prepare")
    p.add_argument("--user", default="app")
    p.add_argument("--password", default="app")
    p.add_argument("--db", default="app")
    p.add_argument("--bar-ratio", type=float, default=0.9, help="shardgate/haproxy throughput bar")
    p.add_argument("--bar-threads", type=int, default=32, help="thread count the throughput bar applies to")
    p.add_argument("--bar-rss-mib", type=float, default=64.0, help="proxy RSS bar with --idle-conns open")
    p.add_argument("--keep-dir", action="store_true", help="keep the temporary directory (logs, configs, datadir)")
    a = p.parse_args(argv)
    defaults = (dict(duration=5, rounds=1, threads=[8], idle_conns=200, warmup=2) if a.quick
                else dict(duration=20, rounds=3, threads=[1, 8, 32], idle_conns=1000, warmup=5))
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    bad = [t for t in a.targets if t not in TARGETS]
    if bad or not a.targets:
        p.error(f"--targets: unknown {bad}; choose from {','.join(TARGETS)}")
    if a.duration < 1 or a.rounds < 1 or not a.threads or min(a.threads) < 1:
        p.error("--duration, --rounds and --threads must be positive")
    a.targets = [t for t in TARGETS if t in a.targets]  # canonical order
    if not a.tests:
        p.error("--tests: no tests")
    if len({t.label for t in a.tests}) != len(a.tests):
        p.error("--tests: a test is listed twice")
    if a.replicas < 0:
        p.error("--replicas must be >= 0")
    if "shardgate-etcd" in a.targets and a.external_primary:
        p.error("--targets shardgate-etcd needs the sandbox (its etcd); it cannot run with --external-primary")
    if a.replicas and a.external_primary:
        p.error("--replicas needs the sandbox; with --external-primary pass your own --proxy-config")
    if a.pool_max is None:
        a.pool_max = max(1000, a.idle_conns + 200)
    if a.pool_max < 1:
        p.error("--pool-max must be positive")
    for t in a.tests:
        lua = SYSBENCH_SHARE / f"{t.test}.lua"
        if SYSBENCH_SHARE.is_dir():
            if not lua.exists():
                p.error(f"--tests: no sysbench test {t.test!r} ({lua} missing)")
            if 'require("oltp_common")' not in lua.read_text(errors="replace"):
                p.error(f"--tests: {t.test} does not use oltp_common's tables, which is all the prepare step creates")
    return a


# --------------------------------------------------------------------------------------------
# Small helpers: ports, processes, /proc
# --------------------------------------------------------------------------------------------

def free_port() -> int:
    """A free 127.0.0.1 port (never 3306)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 3306:
            return port


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "",
              logfile: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what} exited with status {proc.returncode} before listening on {host}:{port}"
                             + (f"; last log lines:\n{tail(logfile)}" if logfile else ""))
        if port_accepts(host, port):
            return
        time.sleep(0.1)
    raise BenchError(f"{what} did not accept connections on {host}:{port} within {timeout:.0f}s")


def connect(host: str, port: int, args, timeout: float = 10, database: str | None = "") -> pymysql.Connection:
    return pymysql.connect(
        host=host, port=port, user=args.user, password=args.password,
        database=args.db if database == "" else database,
        connect_timeout=timeout, read_timeout=60, write_timeout=60,
        autocommit=None,  # None: no SET AUTOCOMMIT (PyMySQL still sends SET NAMES after login)
        ssl_disabled=True,  # plain TCP like sysbench (--mysql-ssl=off); PyMySQL would otherwise try TLS
    )


def wait_login(host: str, port: int, args, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what} exited with status {proc.returncode}")
        try:
            conn = connect(host, port, args, timeout=5)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    cur.fetchall()
            finally:
                conn.close()
            return
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
            time.sleep(0.3)
    raise BenchError(f"cannot log in to {what} at {host}:{port} as {args.user}: {last}")


def proc_cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), in seconds."""
    if not pid:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after the last ')' are fixed.
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of the full line


def proc_mem_kib(pid: int | None) -> dict[str, int]:
    out: dict[str, int] = {}
    if not pid:
        return out
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(val.split()[0])
    except OSError:
        pass
    return out


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need + 256
    if soft >= want:
        return
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ValueError, OSError) as e:
        log(f"warning: cannot raise RLIMIT_NOFILE from {soft} to {new}: {e}")
    if new < want:
        log(f"warning: RLIMIT_NOFILE hard limit {hard} is below the {want} file descriptors wanted")


class Child:
    """A long-running child process (haproxy, shardgate serve) that we started and must stop."""

    def __init__(self, name: str, cmd: list[str], logfile: Path):
        self.name, self.cmd, self.logfile = name, cmd, logfile
        log(f"$ {show_cmd(cmd)}    (log: {logfile})")
        self._log = open(logfile, "wb")
        # Own session: a Ctrl-C in the terminal reaches only us, and we stop children in order.
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(REPO))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} (pid {self.pid}) died with status {self.proc.returncode}; "
                             f"last log lines:\n{tail(self.logfile)}")

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()  # by pid, the one we spawned
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def tail(path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join("    " + l for l in lines[-n:])


def run_checked(cmd: list[str], what: str, timeout: float | None = None, cwd: Path | None = None,
                capture: bool = True) -> subprocess.CompletedProcess:
    log(f"$ {show_cmd(cmd)}")
    try:
        res = subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout,
                             cwd=str(cwd) if cwd else None)
    except FileNotFoundError:
        raise BenchError(f"{what}: {cmd[0]} not found")
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: timed out after {timeout:.0f}s")
    if res.returncode != 0:
        out = ((res.stdout or "") + (res.stderr or "")).strip().splitlines()
        raise BenchError(f"{what} failed with status {res.returncode}:\n" + "\n".join("    " + l for l in out[-25:]))
    return res


# --------------------------------------------------------------------------------------------
# The environment: sandbox or external MariaDB, HAProxy, shardgate
# --------------------------------------------------------------------------------------------

class Env:
    """Everything started for one benchmark, torn down in reverse by close()."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="shardgate-load-"))
        self.sandbox_up = False
        self.sandbox_pids: list[tuple[int, str]] = []  # (pid, datadir) of the sandbox servers
        self.primary: tuple[str, int] | None = None
        self.primary_pid: int | None = None
        # Every server of the cluster (the primary first): name, role, host, port, pid (None
        # for an external primary). Server-side counters are read on each, directly, as root.
        self.servers: list[dict] = []
        self._root_warned: set[str] = set()
        # Per proxy target (PROXY_TARGETS): the config it serves and its process.
        self.proxy_configs: dict[str, Path] = {}
        self.proxies: dict[str, Child] = {}
        self.haproxy: Child | None = None
        self.endpoints: dict[str, tuple[str, int]] = {}
        self.commands: dict[str, str] = {}

    @property
    def shardgate(self) -> Child | None:
        """The `shardgate` target's process (the state-file one: the memory check runs on it)."""
        return self.proxies.get("shardgate")

    @property
    def with_etcd(self) -> bool:
        return "shardgate-etcd" in self.args.targets

    # -- build -------------------------------------------------------------------------------
    def needs_binary(self) -> bool:
        a = self.args
        return a.external_primary is None or ("shardgate" in a.targets and a.external_proxy is None) or self.with_etcd

    def build(self) -> None:
        if not self.needs_binary():
            log("(shardgate binary not needed: external primary, no local proxy)")
            return
        if self.args.no_build:
            log(f"(--no-build: using {self.args.binary})")
        else:
            cmd = ["cargo", "build", "--release"]
            self.commands["build"] = f"(cd {REPO} && {show_cmd(cmd)})"
            t0 = time.monotonic()
            # Not captured: cargo's progress goes straight to the terminal.
            run_checked(cmd, "cargo build --release", cwd=REPO, capture=False)
            log(f"built in {time.monotonic() - t0:.0f}s")
        if not os.access(self.args.binary, os.X_OK):
            raise BenchError(f"no executable shardgate binary at {self.args.binary}")

    # -- MariaDB -----------------------------------------------------------------------------
    def start_primary(self) -> None:
        a = self.args
        if a.external_primary:
            self.primary = a.external_primary
            log(f"primary: external MariaDB at {self.primary[0]}:{self.primary[1]}")
        else:
            cmd = [str(a.binary), "sandbox", "up", "--dir", str(self.dir), "--shards", "1", "--replicas", str(a.replicas)]
            if self.with_etcd:
                cmd.append("--etcd")  # its config keeps the topology in etcd; `shardgate` is set back to the file
            self.commands["sandbox_up"] = show_cmd(cmd)
            self.sandbox_up = True  # tear down even if 'up' fails half way
            run_checked(cmd, "shardgate sandbox up", timeout=300)
            cluster_file = self.dir / "cluster.json"
            try:
                cluster = json.loads(cluster_file.read_text())
            except (OSError, ValueError) as e:
                raise BenchError(f"sandbox up did not write a readable {cluster_file}: {e}")
            for s in cluster.get("servers", []):
                if s.get("pid"):
                    self.sandbox_pids.append((int(s["pid"]), str(s.get("datadir", ""))))
            prim = [s for s in cluster.get("servers", []) if s.get("role") == "primary"]
            if not prim:
                raise BenchError(f"{cluster_file} lists no primary server")
            self.primary = (prim[0].get("host", "127.0.0.1"), int(prim[0]["port"]))
            self.primary_pid = int(prim[0]["pid"]) if prim[0].get("pid") else None
            if cluster.get("user"):
                a.user, a.password = cluster["user"], cluster.get("password", a.password)
            shard = prim[0].get("shard")
            mine = [s for s in cluster["servers"] if s.get("shard") == shard]
            mine.sort(key=lambda s: s.get("role") != "primary")  # primary first, replicas in order
            for s in mine:
                name = Path(str(s.get("datadir", ""))).name or f"{shard}-{s.get('role')}"
                self.servers.append({"name": name, "role": s.get("role"), "host": s.get("host", "127.0.0.1"),
                                     "port": int(s["port"]), "pid": int(s["pid"]) if s.get("pid") else None})
            replicas = [f"{s['name']} {s['host']}:{s['port']}" for s in self.servers if s["role"] == "replica"]
            if len(replicas) != a.replicas:
                raise BenchError(f"{cluster_file} lists {len(replicas)} replicas of {shard}, asked for {a.replicas}")
            log(f"primary: sandbox MariaDB at {self.primary[0]}:{self.primary[1]} (pid {self.primary_pid})"
                + (f"; replicas: {', '.join(replicas)}" if replicas else ""))
        if not self.servers:
            self.servers.append({"name": "primary", "role": "primary", "host": self.primary[0],
                                 "port": self.primary[1], "pid": None})
        wait_login(*self.primary, self.args, timeout=60, what="primary MariaDB")
        self.endpoints["direct"] = self.primary

    # -- server-side counters, read directly on each server ----------------------------------
    def root_query(self, server: dict, sql: str, args=None) -> list[tuple] | None:
        """Runs `sql` on `server` as --root-user; None (and one warning per server) if it cannot."""
        a = self.args
        try:
            conn = pymysql.connect(host=server["host"], port=server["port"], user=a.root_user,
                                   password=a.root_password, connect_timeout=5, read_timeout=120,
                                   write_timeout=30, autocommit=True, ssl_disabled=True)
            try:
                with conn.cursor() as cur:
                    cur.execute(sql, args)
                    return list(cur.fetchall())
            finally:
                conn.close()
        except pymysql.MySQLError as e:
            if server["name"] not in self._root_warned:
                self._root_warned.add(server["name"])
                log(f"warning: cannot read counters on {server['name']} ({server['host']}:{server['port']}) "
                    f"as {a.root_user}: {e}")
            return None

    def com_select(self) -> dict[str, int | None]:
        """Com_select of every server (prepared and text SELECTs both count)."""
        out: dict[str, int | None] = {}
        for s in self.servers:
            rows = self.root_query(s, "SHOW GLOBAL STATUS LIKE 'Com_select'")
            out[s["name"]] = int(rows[0][1]) if rows else None
        return out

    def status_sums(self, names: tuple[str, ...]) -> dict[str, int | None]:
        """Global status counters summed over every server (None when one could not be read)."""
        out: dict[str, int | None] = {n: 0 for n in names}
        for s in self.servers:
            rows = dict(self.root_query(s, "SHOW GLOBAL STATUS WHERE Variable_name IN ("
                                        + ", ".join(["%s"] * len(names)) + ")", names) or [])
            for n in names:
                v = rows.get(n)
                out[n] = None if v is None or out[n] is None else out[n] + int(v)
        return out

    def backend_conns(self) -> dict:
        """Connections of the application user on every server (the proxy's backend connections,
        plus any direct client of the same user: none while the idle check runs)."""
        per = []
        for s in self.servers:
            rows = self.root_query(s, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s",
                                   (self.args.user,))
            per.append({"server": s["name"], "role": s["role"], "addr": f"{s['host']}:{s['port']}",
                        "conns": int(rows[0][0]) if rows else None})
        known = [p["conns"] for p in per if p["conns"] is not None]
        return {"per_server": per, "total": sum(known) if known else None}

    def wait_replicas(self, timeout: float = 120) -> float:
        """Waits until every replica has applied what the primary has written, so the replication
        work of one run does not spill into the next. Returns the seconds waited."""
        replicas = [s for s in self.servers if s["role"] == "replica"]
        if not replicas:
            return 0.0
        rows = self.root_query(self.servers[0], "SELECT @@gtid_binlog_pos")
        if not rows or not rows[0][0]:
            return 0.0
        pos = rows[0][0]
        t0 = time.monotonic()
        for r in replicas:
            left = max(1.0, timeout - (time.monotonic() - t0))
            res = self.root_query(r, "SELECT MASTER_GTID_WAIT(%s, %s)", (pos, left))
            if res and res[0][0] != 0:
                log(f"warning: {r['name']} has not applied GTID {pos} after {left:.0f}s")
        return time.monotonic() - t0

    def db_pids(self) -> list[int]:
        return [s["pid"] for s in self.servers if s["pid"]]

    # -- HAProxy -----------------------------------------------------------------------------
    def start_haproxy(self) -> None:
        port = free_port()
        host, pport = self.primary
        cfg = self.dir / "haproxy.cfg"
        # HAProxy wants 2 fds per connection and refuses to start above its fd limit.
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        maxconn = 8192 if soft == resource.RLIM_INFINITY else max(256, min(8192, (soft - 256) // 2))
        cfg.write_text(f"""# Generated by benches/load/run.py: pure L4 forwarding, the floor of any proxy's cost.
global
    nbthread {self.args.haproxy_threads}
    maxconn {maxconn}

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend mysql_in
    bind 127.0.0.1:{port}
    default_backend mysql_primary

backend mysql_primary
    server primary {host}:{pport}
""")
        cmd = ["haproxy", "-f", str(cfg), "-db"]
        self.commands["haproxy"] = show_cmd(cmd)
        self.haproxy = Child("haproxy", cmd, self.dir / "haproxy.log")
        wait_port("127.0.0.1", port, 15, self.haproxy.proc, "haproxy", self.haproxy.logfile)
        wait_login("127.0.0.1", port, self.args, 15, self.haproxy.proc, "haproxy")
        self.endpoints["haproxy"] = ("127.0.0.1", port)
        log(f"haproxy: 127.0.0.1:{port} -> {host}:{pport} (pid {self.haproxy.pid}, nbthread {self.args.haproxy_threads})")

    # -- shardgate ---------------------------------------------------------------------------
    def write_proxy_config(self) -> Path:
        """A minimal one-shard config for --external-primary (the sandbox writes its own)."""
        host, port = self.primary
        path = self.dir / "shardgate.toml"
        a = self.args
        path.write_text(f"""# Generated by benches/load/run.py for --external-primary {host}:{port}
[proxy]
listen = "127.0.0.1:{free_port()}"
admin_listen = "127.0.0.1:{free_port()}"

[[users]]
name = {json.dumps(a.user)}
password = {json.dumps(a.password)}

[keyspace.{a.db}]
sharding = "unsharded"

[[keyspace.{a.db}.shards]]
name = "s0"
primary = "{host}:{port}"
""")
        return path

    def start_shardgate(self, target: str = "shardgate") -> None:
        a = self.args
        if target == "shardgate-etcd":
            # Always the sandbox's config (--proxy-config and --external-proxy are for `shardgate`).
            cfg = self.bench_config(self.dir / "shardgate.toml", target)
        elif a.external_proxy:
            self.endpoints["shardgate"] = a.external_proxy
            log(f"shardgate: external proxy at {a.external_proxy[0]}:{a.external_proxy[1]} (no CPU/memory numbers)")
            wait_login(*a.external_proxy, a, 30, what="shardgate (external)")
            return
        elif a.proxy_config:
            cfg = a.proxy_config.resolve()  # served as it is
            if not cfg.exists():
                raise BenchError(f"no proxy config at {cfg}")
        elif target == "shardgate-ryw":
            cfg = self.bench_config(self.dir / "shardgate.toml", target)
        else:
            base = self.write_proxy_config() if a.external_primary else self.dir / "shardgate.toml"
            if not base.exists():
                raise BenchError(f"no proxy config at {base}")
            cfg = self.bench_config(base, target)
        self.proxy_configs[target] = cfg
        check = [str(a.binary), "check", str(cfg)]
        self.commands[f"{target}_check"] = show_cmd(check)
        run_checked(check, f"shardgate check {cfg}", timeout=30)
        host, port = proxy_listen(cfg)
        if port_accepts(host, port):
            raise BenchError(f"{host}:{port} (proxy.listen in {cfg}) is already in use")
        cmd = [str(a.binary), "serve", "--config", str(cfg)]
        self.commands[target] = show_cmd(cmd)
        child = Child(target, cmd, self.dir / f"{target}.log")
        self.proxies[target] = child
        wait_port(host, port, 30, child.proc, f"{target} serve", child.logfile)
        wait_login(host, port, a, 30, child.proc, f"{target} serve")
        self.endpoints[target] = (host, port)
        backends = ", ".join(f"{s['host']}:{s['port']}" for s in self.servers)
        store = store_of(cfg)
        log(f"{target}: {host}:{port} -> {backends} (pid {child.pid}, topology store {store})")
        if target == "shardgate-etcd":
            self.wait_store_up(cfg)

    def admin_get(self, cfg: Path, path: str) -> dict:
        """`GET path` on the admin API of the proxy serving `cfg`, with its token."""
        import urllib.request
        doc = tomllib.loads(cfg.read_text()).get("proxy", {})
        req = urllib.request.Request(f"http://{doc.get('admin_listen')}{path}",
                                     headers={"Authorization": f"Bearer {doc.get('admin_token', '')}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def wait_store_up(self, cfg: Path, timeout: float = 30) -> None:
        """Waits until the proxy serving `cfg` holds its etcd lease (`/api/v1/topology` store.up)."""
        if tomllib is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                store = self.admin_get(cfg, "/api/v1/topology").get("store", {})
                if store.get("kind") == "etcd" and store.get("up"):
                    return
            except OSError:
                store = {}
            if time.monotonic() > deadline:
                raise BenchError(f"the proxy serving {cfg} did not reach etcd within {timeout:.0f}s: {store}")
            time.sleep(0.2)

    def cache_stats(self, target: str) -> dict | None:
        """The result cache's counters from the admin API (`GET /api/v1/cache`), if it is on."""
        cfg = self.proxy_configs.get(target)
        if not self.args.cache_ttl_ms or tomllib is None or cfg is None:
            return None
        try:
            return self.admin_get(cfg, "/api/v1/cache")
        except OSError as e:
            log(f"  (cache stats unavailable: {e})")
            return None

    def pid_of(self, target: str) -> int | None:
        if target == "haproxy" and self.haproxy:
            return self.haproxy.pid
        if target in self.proxies:
            return self.proxies[target].pid
        return None

    def check_children(self) -> None:
        for c in (self.haproxy, *self.proxies.values()):
            if c is not None:
                c.check_alive()

    # -- teardown ----------------------------------------------------------------------------
    def close(self, keep: bool) -> None:
        for c in (*self.proxies.values(), self.haproxy):
            if c is not None:
                try:
                    c.stop()
                except Exception as e:  # noqa: BLE001 - keep tearing down
                    log(f"warning: stopping {c.name} (pid {c.pid}): {e}")
        if self.sandbox_up:
            cmd = [str(self.args.binary), "sandbox", "down", "--dir", str(self.dir)]
            try:
                run_checked(cmd, "shardgate sandbox down", timeout=120)
            except BenchError as e:
                log(f"warning: {e}")
                self.kill_sandbox_servers()
        if keep:
            log(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def bench_config(self, base_cfg: Path, target: str = "shardgate") -> Path:
        """`bench-TARGET.toml`: the sandbox's proxy config (replicas included) with

        - `[pool] max_connections = --pool-max`: by default room for one backend connection per
          idle client (PyMySQL sends SET NAMES at login; a proxy without multiplexing keeps a
          server connection for such a session; the sandbox servers allow 3000);
        - `[routing] read_write_split = true`, `consistency = --consistency`, explicitly;
        - `[monitor] user = "root"`, `password = ""` (--root-user/--root-password) where the base
          config has none;
        - with the sandbox etcd (`--targets ...,shardgate-etcd`): for `shardgate`, `[topology]
          store = "file"` and a state file of its own (as without etcd); for `shardgate-etcd`, the
          sandbox's `store = "etcd"` kept and its own listen and admin ports.
        """
        a = self.args
        text = base_cfg.read_text()
        text = toml_set(text, "pool", "max_connections", str(a.pool_max))
        text = toml_set(text, "routing", "read_write_split", "true")
        consistency = "read_your_writes" if target == "shardgate-ryw" else a.consistency
        text = toml_set(text, "routing", "consistency", json.dumps(consistency))
        # The sandbox lets root in from 127.0.0.1 without a password (its config says so already).
        text = toml_set(text, "monitor", "user", json.dumps(a.root_user), only_if_missing=True)
        text = toml_set(text, "monitor", "password", json.dumps(a.root_password), only_if_missing=True)
        if a.proxy_workers is not None:
            text = toml_set(text, "proxy", "workers", str(a.proxy_workers))
        if a.cache_ttl_ms:
            text = toml_set(text, "cache", "max_bytes", str(a.cache_max_mib << 20))
            # The generated config lists no rules inline (`rules = []`): the table form replaces it.
            text = re.sub(r"(?m)^rules = \[\]\s*\n", "", text)
            text += f"\n[[cache.rules]]\nttl_ms = {a.cache_ttl_ms}\n"
        if self.with_etcd and not a.external_primary:
            if target == "shardgate":
                text = toml_set(text, "topology", "store", '"file"')
                text = toml_set(text, "ha", "state_file", json.dumps(str(self.dir / "bench-state.json")))
            else:
                text = toml_set(text, "proxy", "listen", json.dumps(f"127.0.0.1:{free_port()}"))
                text = toml_set(text, "proxy", "admin_listen", json.dumps(f"127.0.0.1:{free_port()}"))
        if target == "shardgate-ryw":
            text = toml_set(text, "proxy", "listen", json.dumps(f"127.0.0.1:{free_port()}"))
            text = toml_set(text, "proxy", "admin_listen", json.dumps(f"127.0.0.1:{free_port()}"))
            text = toml_set(text, "ha", "state_file", json.dumps(str(self.dir / "bench-state-ryw.json")))
        out = self.dir / f"bench-{target}.toml"
        out.write_text(f"# {base_cfg.name} as rewritten by benches/load/run.py ([pool], [routing], [monitor]"
                       + (", [topology]" if self.with_etcd else "") + ")\n" + text)
        if tomllib is not None:
            doc = tomllib.loads(out.read_text())
            got = (doc.get("pool", {}).get("max_connections"), doc.get("routing", {}).get("read_write_split"),
                   doc.get("routing", {}).get("consistency"))
            if got != (a.pool_max, True, consistency):
                raise BenchError(f"rewriting {base_cfg} went wrong: pool/routing read back as {got}")
            mon = doc.get("monitor", {})
            replicas = [r for ks in doc.get("keyspace", {}).values() for sh in ks.get("shards", [])
                        for r in sh.get("replicas", [])]
            store = doc.get("topology", {}).get("store", "file")
            want = "etcd" if target == "shardgate-etcd" else "file"
            if store != want:
                raise BenchError(f"{out}: topology store {store!r}, wanted {want!r} for target {target}")
            log(f"bench config {out}: pool.max_connections={a.pool_max} routing.read_write_split=true "
                f"routing.consistency={consistency} monitor.user={mon.get('user')!r} topology.store={store}; "
                f"replicas: {', '.join(map(str, replicas)) or 'none'}")
        return out

    def kill_sandbox_servers(self) -> None:
        """Fallback when 'sandbox down' fails: stop the servers our 'sandbox up' started.

        Only pids named in our cluster.json whose command line still names our datadir, so a
        recycled pid or somebody else's mariadbd is never touched.
        """
        for pid, datadir in self.sandbox_pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            ours = str(self.dir) in cmdline or (datadir and datadir in cmdline)
            if ours and ("mariadbd" in cmdline or "mysqld" in cmdline):
                log(f"stopping sandbox server pid {pid} ({datadir})")
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass


def toml_set(text: str, table: str, key: str, value: str, only_if_missing: bool = False) -> str:
    """Sets `key = value` (a TOML literal, one line) in the top-level `[table]` of a config,
    adding the key or the table if missing; other lines are kept as they are."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[\s*" + re.escape(table) + r"\s*\]\s*(#.*)?$")
    start = next((i for i, l in enumerate(lines) if header.match(l)), None)
    if start is None:
        return text.rstrip("\n") + f"\n\n[{table}]\n{key} = {value}\n"
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^\s*\[", lines[i])), len(lines))
    keyre = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
    for i in range(start + 1, end):
        if keyre.match(lines[i]):
            if not only_if_missing:
                lines[i] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    last = start  # after the table's last non-blank line
    for i in range(start + 1, end):
        if lines[i].strip():
            last = i
    lines.insert(last + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def store_of(cfg: Path) -> str:
    """`[topology] store` of a proxy config (`file` when unset)."""
    if tomllib is None:
        m = re.search(r'^\s*store\s*=\s*"([^"]+)"', cfg.read_text(), re.M)
        return m.group(1) if m else "file"
    return tomllib.loads(cfg.read_text()).get("topology", {}).get("store", "file")


def proxy_listen(cfg: Path) -> tuple[str, int]:
    text = cfg.read_text()
    listen = None
    if tomllib is not None:
        try:
            listen = tomllib.loads(text).get("proxy", {}).get("listen")
        except tomllib.TOMLDecodeError as e:
            raise BenchError(f"{cfg}: {e}")
    else:
        m = re.search(r'^\s*listen\s*=\s*"([^"]+)"', text, re.M)
        listen = m.group(1) if m else None
    listen = listen or "127.0.0.1:6033"  # the config's default
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return host, int(port)


# --------------------------------------------------------------------------------------------
# sysbench
# --------------------------------------------------------------------------------------------

def sysbench_cmd(args, test: str | TestSpec, host: str, port: int, command: str, threads: int = 1,
                 duration: int = 0) -> list[str]:
    spec = test if isinstance(test, TestSpec) else TestSpec(test)
    pin = ["taskset", "-c", str(args.pin_client)] if args.pin_client is not None else []
    cmd = pin + ["sysbench", spec.test, "--db-driver=mysql",
           f"--mysql-host={host}", f"--mysql-port={port}",
           f"--mysql-user={args.user}", f"--mysql-password={args.password}", f"--mysql-db={args.db}",
           f"--tables={args.tables}", f"--table-size={args.table_size}"]
    if command == "run":
        cmd += [f"--threads={threads}", f"--time={duration}", "--report-interval=0",
                "--percentile=95", f"--db-ps-mode={args.ps_mode}"] + spec.run_opts()
    return cmd + [command]


_RE = {
    "transactions": re.compile(r"^\s*transactions:\s+(\d+)\s+\(([\d.]+) per sec\.\)", re.M),
    "queries": re.compile(r"^\s*queries:\s+(\d+)\s+\(([\d.]+) per sec\.\)", re.M),
    "errors": re.compile(r"^\s*ignored errors:\s+(\d+)", re.M),
    "reconnects": re.compile(r"^\s*reconnects:\s+(\d+)", re.M),
    "p95": re.compile(r"^\s*95th percentile:\s+([\d.]+)", re.M),
    "avg": re.compile(r"^\s*avg:\s+([\d.]+)", re.M),
    "time": re.compile(r"^\s*total time:\s+([\d.]+)s", re.M),
}


def parse_sysbench(out: str) -> dict:
    def grab(key: str, group: int = 1, conv=float):
        m = _RE[key].search(out)
        if not m:
            raise BenchError(f"cannot find '{key}' in sysbench output:\n{out[-2000:]}")
        return conv(m.group(group))

    return {
        "transactions": grab("transactions", 1, int),
        "tps": grab("transactions", 2),
        "queries": grab("queries", 1, int),
        "qps": grab("queries", 2),
        "p95_ms": grab("p95"),
        "avg_ms": grab("avg"),
        "errors": grab("errors", 1, int),
        "reconnects": grab("reconnects", 1, int),
        "seconds": grab("time"),
    }


SERVER_COUNTERS = ("Connections", "Com_stmt_prepare")


def run_sysbench(env: Env, spec: TestSpec, target: str, threads: int, duration: int, record: bool) -> dict:
    """One sysbench run against one target, with CPU of the target's proxy and of the database
    servers, and every server's Com_select before and after (where the reads went)."""
    test = spec.label
    host, port = env.endpoints[target]
    cmd = sysbench_cmd(env.args, spec, host, port, "run", threads, duration)
    if record:  # one example per target; tests and thread counts vary as listed above
        env.commands.setdefault(f"sysbench_run_{target}", show_cmd(cmd))
    # Replication of the previous run's writes must not run during this one.
    waited = env.wait_replicas()
    if waited > 0.5:
        log(f"  (waited {waited:.1f}s for the replicas to apply the previous run's writes)")
    ppid = env.pid_of(target)
    cache0 = env.cache_stats(target) if target in PROXY_TARGETS else None
    sel0 = env.com_select() if record else {}
    # What a run costs the servers in connections and prepares (the pool's churn).
    st0 = env.status_sums(SERVER_COUNTERS)
    cpu0, db0 = proc_cpu_seconds(ppid), [proc_cpu_seconds(p) for p in env.db_pids()]
    t0 = time.monotonic()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    except subprocess.TimeoutExpired:
        raise BenchError(f"sysbench {test} against {target} hung past {duration + 120}s: {show_cmd(cmd)}")
    wall = time.monotonic() - t0
    cpu1, db1 = proc_cpu_seconds(ppid), [proc_cpu_seconds(p) for p in env.db_pids()]
    sel1 = env.com_select() if record else {}
    st1 = env.status_sums(SERVER_COUNTERS)
    # Connections the proxy holds right after the run: its pool keeps them for idle_timeout_ms,
    # so this is how many the load needed.
    pooled = env.backend_conns()["total"] if target in PROXY_TARGETS else None
    cache1 = env.cache_stats(target) if target in PROXY_TARGETS else None
    env.check_children()
    if res.returncode != 0:
        out = (res.stdout + res.stderr).strip().splitlines()
        raise BenchError(f"sysbench {test} against {target} failed with status {res.returncode}: {show_cmd(cmd)}\n"
                         + "\n".join("    " + l for l in out[-25:]))
    r = parse_sysbench(res.stdout)
    if r["reconnects"] or (r["errors"] and not spec.writes):
        raise BenchError(f"sysbench {test} against {target}: {r['errors']} errors, {r['reconnects']} reconnects")
    r.update(test=test, sysbench_test=spec.test, target=target, threads=threads, wall_s=round(wall, 2),
             replica_wait_s=round(waited, 2))
    # For writing tests the ignored errors are deadlocks / lock wait timeouts (and, in autocommit
    # mode, duplicate keys) after which sysbench restarted the transaction.
    r["restarts_per_s"] = round(r["errors"] / r["seconds"], 2) if r["seconds"] else None
    q = max(r["queries"], 1)
    r["proxy_cpu_s"] = None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 3)
    r["proxy_cpu_us_per_q"] = None if r["proxy_cpu_s"] is None else round(r["proxy_cpu_s"] * 1e6 / q, 2)
    db = [b - a for a, b in zip(db0, db1) if a is not None and b is not None]
    r["db_cpu_us_per_q"] = round(sum(db) * 1e6 / q, 2) if db and len(db) == len(db0) else None
    for n in SERVER_COUNTERS:
        a, b = st0.get(n), st1.get(n)
        r[n.lower() + "_delta"] = None if a is None or b is None else b - a
    r["backend_conns_after"] = pooled
    if sel0:
        r["com_select"] = {k: (sel1.get(k) - v if v is not None and sel1.get(k) is not None else None)
                           for k, v in sel0.items()}
    if cache0 and cache1:
        hits, misses = cache1["hits"] - cache0["hits"], cache1["misses"] - cache0["misses"]
        r["cache_hit_ratio"] = round(hits / (hits + misses), 4) if hits + misses else None
        r["cache_mib"] = round(cache1["bytes"] / (1 << 20), 2)
        r["proxy_rss_mib"] = round(proc_mem_kib(ppid).get("VmRSS", 0) / 1024, 1) if ppid else None
    return r


# --------------------------------------------------------------------------------------------
# Idle connections: proxy memory
# --------------------------------------------------------------------------------------------

def idle_memory(env: Env, n: int) -> dict:
    a = env.args
    pid = env.shardgate.pid if env.shardgate else None
    host, port = env.endpoints["shardgate"]
    raise_nofile(n)
    result: dict = {"idle_conns": n, "before_kib": proc_mem_kib(pid)}
    # Backend connections the proxy holds (pooled after the sysbench runs) before the clients come.
    result["backend_conns_before"] = env.backend_conns()
    log(f"\nopening {n} idle connections to shardgate at {host}:{port} "
        f"(PyMySQL logins as {a.user}, database {a.db}, only the SET NAMES PyMySQL sends at login)...")
    conns: list[pymysql.Connection] = []
    errors: list[str] = []
    t0 = time.monotonic()

    def one(_: int):
        return connect(host, port, a, timeout=30)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            for fut in [pool.submit(one, i) for i in range(n)]:
                try:
                    conns.append(fut.result())
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors.append(str(e))
        result["open_s"] = round(time.monotonic() - t0, 2)
        time.sleep(2)  # let allocations settle
        if env.shardgate:
            env.shardgate.check_alive()
        result["open"] = len(conns)
        result["with_conns_kib"] = proc_mem_kib(pid)
        # What the N open, idle clients cost the servers: connections of the app user on each.
        result["backend_conns"] = env.backend_conns()
        # Are they all still usable? (Checked after the RSS reading, so it does not count.)
        alive = 0
        for c in conns[: min(len(conns), 50)]:
            try:
                c.ping(reconnect=False)
                alive += 1
            except Exception as e:  # noqa: BLE001
                errors.append(f"ping: {e}")
        result["pinged_ok"] = f"{alive}/{min(len(conns), 50)}"
    finally:
        for c in conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
    time.sleep(2)
    result["after_close_kib"] = proc_mem_kib(pid)
    result["backend_conns_after_close"] = env.backend_conns()
    result["errors"] = len(errors)
    result["first_errors"] = sorted(set(errors))[:5]
    before = result["before_kib"].get("VmRSS")
    during = result["with_conns_kib"].get("VmRSS")
    if before and during and conns:
        result["kib_per_conn"] = round((during - before) / len(conns), 1)
    result["rss_mib"] = round(during / 1024, 1) if during else None
    result["user"] = a.user
    result["bar_mib"] = a.bar_rss_mib
    result["meets_bar"] = bool(during and during / 1024 <= a.bar_rss_mib)
    return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def fmt(x, spec: str = ".2f", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def summarize(args, runs: list[dict]) -> list[dict]:
    rows = []
    for spec in args.tests:
        test = spec.label
        for th in args.threads:
            med: dict[str, dict] = {}
            for tg in args.targets:
                rs = [r for r in runs if r["test"] == test and r["threads"] == th and r["target"] == tg]
                if not rs:
                    continue
                tps = [r["tps"] for r in rs]

                def m(key):
                    vals = [r[key] for r in rs if r.get(key) is not None]
                    return statistics.median(vals) if vals else None

                med[tg] = {"test": test, "threads": th, "target": tg, "rounds": len(rs),
                           "tps": m("tps"), "qps": m("qps"), "p95_ms": m("p95_ms"),
                           "spread_pct": (max(tps) - min(tps)) / statistics.median(tps) * 100 if len(rs) > 1 else None,
                           "proxy_cpu_us_per_q": m("proxy_cpu_us_per_q"), "db_cpu_us_per_q": m("db_cpu_us_per_q"),
                           "restarts_per_s": m("restarts_per_s"), "tps_runs": tps,
                           "cache_hit_ratio": m("cache_hit_ratio"), "cache_mib": m("cache_mib"),
                           "proxy_rss_mib": m("proxy_rss_mib"),
                           "connections_delta": m("connections_delta"),
                           "com_stmt_prepare_delta": m("com_stmt_prepare_delta"),
                           "backend_conns_after": m("backend_conns_after")}
                # Where the SELECTs ran: Com_select deltas summed over the rounds, per server.
                sel: dict[str, int] = {}
                for r in rs:
                    for srv, d in (r.get("com_select") or {}).items():
                        if d is not None:
                            sel[srv] = sel.get(srv, 0) + d
                if sel:
                    med[tg]["com_select"] = sel
            direct = med.get("direct", {}).get("tps")
            for tg, row in med.items():
                row["ratio"] = row["tps"] / direct if direct else None
            hap = med.get("haproxy")
            for sg in (med.get(t) for t in PROXY_TARGETS):
                if sg and hap and hap["tps"]:
                    # shardgate_ratio / haproxy_ratio; equals sg tps / haproxy tps (also without direct).
                    sg["ratio_vs_haproxy"] = sg["tps"] / hap["tps"]
                    if th == args.bar_threads:
                        sg["meets_bar"] = sg["ratio_vs_haproxy"] >= args.bar_ratio
            rows.extend(med.values())
    return rows


def paired(a: list[float], b: list[float]) -> float | None:
    """Median of the per-round ratios a/b: the two ran in the same round, close in time, so
    their ratio is less moved by a neighbour's load burst than the ratio of the medians."""
    rs = [x / y for x, y in zip(a, b) if y]
    return statistics.median(rs) if rs else None


def ratios(rows: list[dict]) -> list[dict]:
    """Each shardgate target / direct per (test, threads): the issue's comparison."""
    out = []
    for sg in (r for r in rows if r["target"] in PROXY_TARGETS):
        d = next((r for r in rows if r["target"] == "direct" and r["test"] == sg["test"]
                  and r["threads"] == sg["threads"]), None)
        if not d or not d["tps"]:
            continue
        sel = sg.get("com_select") or {}
        total = sum(sel.values())
        prim = next(iter(sel.values()), None)  # servers are listed primary first
        out.append({"test": sg["test"], "threads": sg["threads"], "target": sg["target"],
                    "direct_tps": d["tps"], "shardgate_tps": sg["tps"],
                    "cache_hit_ratio": sg.get("cache_hit_ratio"), "cache_mib": sg.get("cache_mib"),
                    "proxy_rss_mib": sg.get("proxy_rss_mib"),
                    "tps_ratio": sg["tps"] / d["tps"],
                    "paired_ratio": paired(sg["tps_runs"], d["tps_runs"]),
                    "qps_ratio": sg["qps"] / d["qps"] if d["qps"] else None,
                    "p95_ratio": sg["p95_ms"] / d["p95_ms"] if d["p95_ms"] else None,
                    "replica_select_share": (total - prim) / total if total and prim is not None and len(sel) > 1 else None})
    return out


def etcd_vs_file(rows: list[dict], other: str = "shardgate-etcd") -> list[dict]:
    """`other` / shardgate per (test, threads): what keeping the topology in etcd costs (or,
    for shardgate-ryw, what read_your_writes costs against the consistency of `shardgate`)."""
    out = []
    for e in (r for r in rows if r["target"] == other):
        f = next((r for r in rows if r["target"] == "shardgate" and r["test"] == e["test"]
                  and r["threads"] == e["threads"]), None)
        if not f or not f["tps"]:
            continue
        out.append({"test": e["test"], "threads": e["threads"], "file_tps": f["tps"], "etcd_tps": e["tps"],
                    "tps_ratio": e["tps"] / f["tps"], "paired_ratio": paired(e["tps_runs"], f["tps_runs"]),
                    "file_spread_pct": f["spread_pct"], "etcd_spread_pct": e["spread_pct"],
                    "p95_ratio": e["p95_ms"] / f["p95_ms"] if f["p95_ms"] and e["p95_ms"] else None,
                    "file_cpu_us_per_q": f["proxy_cpu_us_per_q"], "etcd_cpu_us_per_q": e["proxy_cpu_us_per_q"]})
    return out


def print_etcd_vs_file(rows: list[dict], other: str = "shardgate-etcd") -> None:
    ev = etcd_vs_file(rows, other)
    if not ev:
        return
    what = ("topology in etcd vs in the state file" if other == "shardgate-etcd"
            else "consistency read_your_writes vs that of shardgate")
    log(f"\n{other} / shardgate ({what}, same servers, same rounds; a ratio within the spreads is noise):")
    pct = lambda x: "-" if x is None else f"{x:.0f}%"  # noqa: E731
    a, b = ("file", "etcd") if other == "shardgate-etcd" else ("shardgate", other)
    table = [["test", "thr", f"{a} tps", f"{b} tps", "tps ratio", "paired ratio", f"spread {a}", f"spread {b}",
              "p95 ratio", f"cpu us/q {a}", f"cpu us/q {b}"]]
    for r in ev:
        table.append([r["test"], str(r["threads"]), fmt(r["file_tps"], ".1f"), fmt(r["etcd_tps"], ".1f"),
                      fmt(r["tps_ratio"], ".3f"), fmt(r["paired_ratio"], ".3f"), pct(r["file_spread_pct"]),
                      pct(r["etcd_spread_pct"]), fmt(r["p95_ratio"], ".3f"), fmt(r["file_cpu_us_per_q"], ".1f"),
                      fmt(r["etcd_cpu_us_per_q"], ".1f")])
    print_grid(table, left={0})


def print_table(args, rows: list[dict]) -> None:
    restarts = any(t.writes for t in args.tests)
    hdr = ["test", "thr", "target", "tps", "qps", "p95 ms", "spread", "vs direct", "vs haproxy",
           f"bar>={args.bar_ratio:g}@{args.bar_threads}", "proxy cpu us/q", "db cpu us/q",
           "+conns", "+prepares", "pooled"] + (["restarts/s"] if restarts else [])
    table = [hdr]
    for r in rows:
        bar = "-"
        if "meets_bar" in r:
            bar = "yes" if r["meets_bar"] else "NO"
        elif r["target"] in PROXY_TARGETS and r.get("ratio_vs_haproxy") is not None:
            bar = "(n/a)"
        table.append([
            r["test"], str(r["threads"]), r["target"], fmt(r["tps"], ".1f"), fmt(r["qps"], ".1f"),
            fmt(r["p95_ms"]), fmt(r["spread_pct"], ".0f") + ("%" if r["spread_pct"] is not None else ""),
            fmt(r.get("ratio"), ".3f"), fmt(r.get("ratio_vs_haproxy"), ".3f"), bar,
            fmt(r["proxy_cpu_us_per_q"], ".1f"), fmt(r["db_cpu_us_per_q"], ".1f"),
            fmt(r.get("connections_delta"), ".0f"), fmt(r.get("com_stmt_prepare_delta"), ".0f"),
            fmt(r.get("backend_conns_after"), ".0f"),
        ] + ([fmt(r.get("restarts_per_s"), ".1f")] if restarts else []))
    print_grid(table, left={0, 2})


def print_grid(table: list[list[str]], left: set[int]) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for i, row in enumerate(table):
        log("  ".join(c.ljust(w) if j in left else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            log("  ".join("-" * w for w in widths))


def print_ratios(args, rows: list[dict], rat: list[dict]) -> None:
    if not rat:
        return
    log("\nshardgate / direct per shardgate target (medians, and the median of each round's ratio; direct = the primary alone"
        + (f", shardgate = read/write split over the primary and {args.replicas} replica(s)" if args.replicas else "")
        + f", consistency {args.consistency}):")
    cache = args.cache_ttl_ms is not None
    table = [["test", "thr", "target", "direct tps", "target tps", "tps ratio", "paired ratio", "qps ratio", "p95 ratio",
              "SELECTs on replicas"]
             + (["cache hits", "cache MiB", "proxy RSS MiB"] if cache else [])]
    for r in rat:
        share = r["replica_select_share"]
        hit = r.get("cache_hit_ratio")
        table.append([r["test"], str(r["threads"]), r["target"], fmt(r["direct_tps"], ".1f"), fmt(r["shardgate_tps"], ".1f"),
                      fmt(r["tps_ratio"], ".3f"), fmt(r.get("paired_ratio"), ".3f"), fmt(r["qps_ratio"], ".3f"),
                      fmt(r["p95_ratio"], ".3f"),
                      "-" if share is None else f"{share * 100:.0f}%"]
                     + ([("-" if hit is None else f"{hit * 100:.1f}%"), fmt(r.get("cache_mib"), ".1f"),
                         fmt(r.get("proxy_rss_mib"), ".1f")] if cache else []))
    print_grid(table, left={0, 2})


def print_read_spread(args, rows: list[dict]) -> None:
    """Com_select deltas per server during the shardgate runs (summed over rounds)."""
    sg = [r for r in rows if r["target"] == "shardgate" and r.get("com_select")]
    if not sg or len(sg[0]["com_select"]) < 2:
        return  # one server: nothing to spread over
    servers = list(sg[0]["com_select"].keys())
    log("\nSELECTs per server during the shardgate runs (Com_select delta from SHOW GLOBAL STATUS on each server, "
        "summed over rounds; includes the monitor's few):")
    table = [["test", "thr"] + servers + ["on replicas"]]
    stuck = []
    for r in sg:
        sel = r["com_select"]
        total = sum(sel.values())
        on_rep = total - sel.get(servers[0], 0)
        table.append([r["test"], str(r["threads"])]
                     + [f"{sel.get(s, 0)} ({sel.get(s, 0) / total * 100:.0f}%)" if total else "0" for s in servers]
                     + [f"{on_rep / total * 100:.0f}%" if total else "-"])
        if len(servers) > 1 and total and on_rep / total < 0.05:
            stuck.append(r["test"])
    print_grid(table, left={0})
    if stuck:
        tests = sorted(set(stuck))
        log(f"  note: the reads of {', '.join(tests)} stayed on the primary. sysbench wraps each event in "
            f"BEGIN ... COMMIT unless --skip_trx=on, and a transaction runs on the primary. Autocommit reads "
            f"(test spec TEST+skip_trx) are the ones the split may send to replicas; if those stay on the primary "
            f"too, check the replicas' health and lag in the shardgate log.")


def print_memory(memory: dict) -> None:
    b, w, c = memory["before_kib"], memory["with_conns_kib"], memory["after_close_kib"]
    log(f"shardgate memory with {memory['open']}/{memory['idle_conns']} idle connections open "
        f"(opened in {memory['open_s']}s, {memory['errors']} errors, ping {memory['pinged_ok']}):")
    for label, m in (("before:      ", b), ("conns open:  ", w), ("after close: ", c)):
        extra = ""
        if m is w:
            extra = f"  ({fmt(memory.get('kib_per_conn'), '.1f')} KiB per connection, {w.get('Threads', '?')} threads)"
        log(f"  {label} VmRSS {m.get('VmRSS', 0) / 1024:6.1f} MiB  VmHWM {m.get('VmHWM', 0) / 1024:6.1f} MiB{extra}")
    if memory["first_errors"]:
        log("  errors: " + "; ".join(memory["first_errors"]))
    bc = memory.get("backend_conns")
    if bc:
        before = {p["server"]: p["conns"] for p in memory["backend_conns_before"]["per_server"]}
        after = {p["server"]: p["conns"] for p in memory["backend_conns_after_close"]["per_server"]}
        log(f"backend connections of user {memory.get('user', '?')} (information_schema.PROCESSLIST on each server), "
            f"with the {memory['open']} idle clients open:")
        for p in bc["per_server"]:
            log(f"  {p['server']:14s} {p['role'] or '':8s} {p['addr']:21s} {fmt(p['conns'], 'd'):>6s}   "
                f"(before: {fmt(before.get(p['server']), 'd')}, after close: {fmt(after.get(p['server']), 'd')})")
        tb = memory["backend_conns_before"]["total"]
        log(f"  {'total':14s} {'':8s} {'':21s} {fmt(bc['total'], 'd'):>6s}   (before: {fmt(tb, 'd')}, after close: "
            f"{fmt(memory['backend_conns_after_close']['total'], 'd')})")


def host_info() -> dict:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpus": os.cpu_count(), "loadavg_at_start": load, "kernel": platform.release(),
            "python": platform.python_version(),
            "sysbench": subprocess.run(["sysbench", "--version"], capture_output=True, text=True).stdout.strip(),
            "haproxy": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0:1]}


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("sysbench", "haproxy") if "haproxy" in args.targets else ("sysbench",):
        if shutil.which(tool) is None:
            log(f"error: {tool} is not installed (apt-get install {tool})")
            return 1

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Even when started with SIGINT ignored (a background job), Ctrl-C / kill -INT tears down.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Raise the fd limit before any child starts, so a proxy we spawn inherits it too.
    raise_nofile(max(args.idle_conns, 1024) + 1024)
    if args.pin_client is not None:
        others = set(range(os.cpu_count() or 1)) - {args.pin_client}
        if not others or args.pin_client not in range(os.cpu_count() or 1):
            log(f"error: --pin-client {args.pin_client} needs another CPU for the servers")
            return 1
        # Children (sandbox servers, proxies) inherit this affinity; sysbench runs under taskset.
        os.sched_setaffinity(0, others)
        log(f"sysbench pinned to CPU {args.pin_client}; servers and proxies on CPUs {sorted(others)}")

    info = host_info()
    n_runs = len(args.tests) * len(args.threads) * args.rounds * len(args.targets)
    est = n_runs * (args.duration + 1) + len(args.tests) * len(args.targets) * args.warmup
    log(f"shardgate load benchmark: tests={','.join(t.label for t in args.tests)} "
        f"threads={','.join(map(str, args.threads))} targets={','.join(args.targets)} rounds={args.rounds} "
        f"duration={args.duration}s replicas={args.replicas} consistency={args.consistency} "
        f"pool-max={args.pool_max} (~{est / 60:.1f} min of sysbench)")
    log(f"host: {info['cpus']} CPUs, load average {info['loadavg_at_start']}; shared and noisy, so the bars "
        f"below are reported, not asserted")

    env = Env(args)
    runs: list[dict] = []
    rows: list[dict] = []
    memory: dict | None = None
    failure: str | None = None
    status = 0
    try:
        log(f"work dir: {env.dir}")
        env.build()
        env.start_primary()
        if "haproxy" in args.targets:
            env.start_haproxy()
        for tg in PROXY_TARGETS:
            if tg in args.targets:
                env.start_shardgate(tg)
        if env.shardgate:
            m = proc_mem_kib(env.shardgate.pid)
            log(f"shardgate memory at start: VmRSS {m.get('VmRSS', 0) / 1024:.1f} MiB, {m.get('Threads', '?')} threads")

        host, port = env.primary
        if not args.skip_prepare:
            # Once, directly against the primary, shared by every test and target.
            for command in ("cleanup", "prepare"):
                cmd = sysbench_cmd(args, "oltp_point_select", host, port, command)
                env.commands[f"sysbench_{command}"] = show_cmd(cmd)
                run_checked(cmd, f"sysbench {command}", timeout=600)

        combo = 0
        for spec in args.tests:
            if args.warmup > 0:
                log(f"\nwarm-up: {spec.label}, {args.warmup}s per target at {max(args.threads)} threads (not recorded)")
                for tg in args.targets:
                    run_sysbench(env, spec, tg, max(args.threads), args.warmup, record=False)
            for th in args.threads:
                log(f"\n{spec.label}, {th} threads:")
                for rnd in range(args.rounds):
                    k = (rnd + combo) % len(args.targets)
                    order = args.targets[k:] + args.targets[:k]  # rotate: nobody always goes first
                    for tg in order:
                        r = run_sysbench(env, spec, tg, th, args.duration, record=True)
                        r["round"] = rnd + 1
                        runs.append(r)
                        extra = f"  restarts {fmt(r['restarts_per_s'], '.1f')}/s" if spec.writes else ""
                        if tg == "shardgate" and len(env.servers) > 1 and r.get("com_select"):
                            extra += "  Com_select " + " ".join(f"{k}+{fmt(v, 'd')}" for k, v in r["com_select"].items())
                        log(f"  round {rnd + 1} {tg:14s} tps {r['tps']:10.1f}  qps {r['qps']:10.1f}  "
                            f"p95 {r['p95_ms']:7.2f} ms  proxy cpu {fmt(r['proxy_cpu_us_per_q'], '.1f')} us/q  "
                            f"server +conns {fmt(r['connections_delta'], 'd')} +prepares {fmt(r['com_stmt_prepare_delta'], 'd')}"
                            f" pooled {fmt(r['backend_conns_after'], 'd')}{extra}")
                combo += 1

        rows = summarize(args, runs)
        log(f"\nMedians over {args.rounds} round(s), {args.duration}s each "
            f"(spread = (max-min)/median of tps over rounds; cpu = utime+stime per query; db = all "
            f"{len(env.servers)} server(s)):")
        print_table(args, rows)
        print_ratios(args, rows, ratios(rows))
        print_etcd_vs_file(rows)
        print_etcd_vs_file(rows, "shardgate-ryw")
        print_read_spread(args, rows)

        if "shardgate" in args.targets and args.idle_conns > 0:
            if env.shardgate is None:
                log("\n(memory check skipped: --external-proxy gives no pid to read /proc from)")
            else:
                memory = idle_memory(env, args.idle_conns)
                print_memory(memory)
                if memory["errors"]:
                    failure, status = f"{memory['errors']} of {args.idle_conns} idle connections failed", 1
    except KeyboardInterrupt:
        failure, status = "interrupted", 130
        log("\ninterrupted; tearing down")
    except BenchError as e:
        failure, status = str(e), 1
        log(f"\nFAILED: {e}")
    finally:
        if status != 0:
            for c in env.proxies.values():
                log(f"{c.name} log tail ({c.logfile}):\n{tail(c.logfile)}")
        try:
            env.close(keep=args.keep_dir or status == 1)
        except KeyboardInterrupt:
            env.close(keep=True)

    if runs and not rows:
        rows = summarize(args, runs)
        log(f"\nPartial results ({len(runs)} runs completed before the failure):")
        print_table(args, rows)
        print_ratios(args, rows, ratios(rows))
        print_etcd_vs_file(rows)
        print_etcd_vs_file(rows, "shardgate-ryw")

    bars = [r for r in rows if "meets_bar" in r]
    log("\nBars (reported, not asserted; this machine is shared and noisy):")
    if bars:
        for r in bars:
            log(f"  throughput {r['test']} @{r['threads']} threads: {r['target']}/haproxy = {r['ratio_vs_haproxy']:.3f} "
                f"(bar >= {args.bar_ratio:g}): {'meets' if r['meets_bar'] else 'BELOW'}")
    else:
        log(f"  throughput: not evaluated (needs haproxy and shardgate at {args.bar_threads} threads)")
    if memory:
        log(f"  memory: VmRSS {fmt(memory['rss_mib'], '.1f')} MiB with {memory['open']} idle connections "
            f"(bar <= {args.bar_rss_mib:g} MiB): {'meets' if memory['meets_bar'] else 'ABOVE'}")
        bc = memory.get("backend_conns") or {}
        if bc.get("total") is not None:
            log(f"  backend connections with {memory['open']} idle clients: {bc['total']} in total ("
                + ", ".join(f"{p['server']} {fmt(p['conns'], 'd')}" for p in bc["per_server"])
                + f"; {memory['backend_conns_before']['total']} before they connected)")
    else:
        log("  memory: not measured")

    log("\nCommands:")
    for k, v in env.commands.items():
        log(f"  {k}: {v}")

    if args.json:
        def plain(v):
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, list) and v and isinstance(v[0], TestSpec):
                return [t.label for t in v]
            return v

        doc = {"args": {k: plain(v) for k, v in vars(args).items()},
               "host": info, "servers": env.servers, "commands": env.commands, "runs": runs, "medians": rows,
               "ratios": ratios(rows), "etcd_vs_file": etcd_vs_file(rows),
               "ryw_vs_shardgate": etcd_vs_file(rows, "shardgate-ryw"), "memory": memory,
               "backend_conns": memory.get("backend_conns") if memory else None,
               "status": status, "failure": failure}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        log(f"\nwrote {args.json}")
    log(f"\n{'OK' if status == 0 else 'FAILED'}: {failure or 'all runs completed'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
