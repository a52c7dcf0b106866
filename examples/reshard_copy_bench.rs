//! Issue 15's copy benchmark: how fast the reshard copy moves rows off a shard while sysbench
//! writes to it, and how much of the writers' throughput survives the copy.
//!
//! A 2-shard sandbox (no replicas) with `sbtest1` sharded by `id` holds N sysbench rows, each on
//! the shard the ring gives it. A third shard s2 is added; one sysbench `oltp_write_only` run
//! writes to s0's primary directly throughout: a warm-up, a baseline window, the copy of every
//! row of s0 that moves to s2 (chunks of `--chunk` rows, each read in its own snapshot), and a
//! window after it. The sysbench per-second reports are split into those windows by when they
//! arrived, so before, during and after are one process, one connection set, one table.
//!
//! See benches/reshard_copy/README.md.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, Value};
use shardgate::reshard::copy::{copy_chunk, create_like, Position, Side, TableShape};
use shardgate::sandbox::{self, SandboxOptions, ShardedTable, TableLayout};
use shardgate::shardmap::ring::{key_hash, KeyValue, Ring};

const TABLE: &str = "sbtest1";
const SCHEMA: &str = "app";

#[derive(Parser, Debug)]
#[command(about = "reshard copy rate and writer throughput during the copy (issue 15)")]
struct Args {
    /// Rows of sbtest1 over both shards.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Rows per copy chunk (one snapshot each).
    #[arg(long, default_value_t = 1000)]
    chunk: usize,
    /// sysbench threads writing to s0.
    #[arg(long, default_value_t = 8)]
    threads: u32,
    /// Seconds of sysbench before the baseline window (not counted).
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Seconds of the baseline window.
    #[arg(long, default_value_t = 15)]
    baseline: u64,
    /// Seconds of the window after the copy (shows drift; not part of the ratio).
    #[arg(long, default_value_t = 10)]
    after: u64,
    /// Sandbox directory (default: a new one under the temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Skip the copy without writers that runs first (for the copy's unloaded rate).
    #[arg(long)]
    no_idle_copy: bool,
    /// Leave the sandbox running at the end.
    #[arg(long)]
    keep: bool,
    /// Each chunk's position as `@@gtid_binlog_pos` read before its snapshot (cheap, at or
    /// before it) instead of the snapshot's own through `BINLOG_GTID_POS` (exact, reads the
    /// binlog file from its start).
    #[arg(long)]
    at_or_before: bool,
}

/// Stops the sandbox however the run ends.
struct Down {
    dir: PathBuf,
    keep: bool,
}

impl Drop for Down {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "sandbox left running: shardgate sandbox down --dir {}",
                self.dir.display()
            );
        } else {
            if let Err(e) = sandbox::down(&self.dir) {
                eprintln!("sandbox down {}: {e}", self.dir.display());
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Kills sysbench however the run ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn root(port: u16) -> Result<Conn> {
    let url = format!("mysql://root@127.0.0.1:{port}/?prefer_socket=false");
    let opts = Opts::from_url(&url).context("root url")?;
    Conn::new(opts)
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))
}

fn sysbench(port: u16, rows: u64, extra: &[String]) -> Command {
    let mut c = Command::new("sysbench");
    c.arg("oltp_write_only")
        .arg("--db-driver=mysql")
        .arg("--mysql-host=127.0.0.1")
        .arg(format!("--mysql-port={port}"))
        .arg("--mysql-user=root")
        .arg("--mysql-password=")
        .arg(format!("--mysql-db={SCHEMA}"))
        .arg("--tables=1")
        .arg(format!("--table-size={rows}"))
        .args(extra);
    c
}

fn show(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn id_hash(id: u64) -> u64 {
    key_hash(&KeyValue::Int(i128::from(id)))
}

/// sysbench-prepares ids 1..=rows on the shard at `port`, then deletes those the ring gives
/// to another shard, so each row lives where the proxy would route it.
async fn fill_shard(port: u16, rows: u64, ring: &Ring, shard: usize) -> Result<u64> {
    let mut prep = sysbench(port, rows, &["prepare".to_string()]);
    let out = prep
        .output()
        .with_context(|| format!("running {}", show(&prep)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            show(&prep),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut c = root(port).await?;
    let foreign: Vec<u64> = (1..=rows)
        .filter(|&id| ring.shard_for(id_hash(id)) != shard)
        .collect();
    for batch in foreign.chunks(2000) {
        let list = batch
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        c.query_drop(format!("DELETE FROM {SCHEMA}.{TABLE} WHERE id IN ({list})"))
            .await
            .with_context(|| format!("deleting foreign rows on 127.0.0.1:{port}"))?;
    }
    Ok(rows - foreign.len() as u64)
}

/// Waits (up to `limit`) until InnoDB on `port` has purged the fill's deletes, whose purge would
/// otherwise compete with the writers in the baseline window only. Returns the history length
/// left.
async fn purged(port: u16, limit: Duration) -> Result<u64> {
    let mut c = root(port).await?;
    let until = Instant::now() + limit;
    loop {
        let len: Option<u64> = c
            .query_first(
                "SELECT COUNT FROM information_schema.INNODB_METRICS \
                 WHERE NAME = 'trx_rseg_history_len'",
            )
            .await
            .context("reading the undo history length")?;
        let len = len.unwrap_or(0);
        if len < 100 || Instant::now() >= until {
            return Ok(len);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One sysbench per-second report: when it arrived, tps, p95 latency (ms), errors/s.
#[derive(Debug, Clone, Copy)]
struct Interval {
    at: Instant,
    tps: f64,
    p95: f64,
    err: f64,
}

/// `[ 3s ] thds: 8 tps: 812.95 qps: ... lat (ms,95%): 20.37 err/s: 0.00 reconn/s: 0.00`
fn parse_interval(line: &str, at: Instant) -> Option<Interval> {
    let field = |name: &str| -> Option<f64> {
        let rest = &line[line.find(name)? + name.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    Some(Interval {
        at,
        tps: field("tps:")?,
        p95: field("%):")?,
        err: field("err/s:")?,
    })
}

#[derive(Debug, Default)]
struct Window {
    n: usize,
    tps: f64,
    p95_median: f64,
    err: f64,
}

/// The reports that arrived in `(from + 1 s, to]`: each covers the second before it arrived,
/// so that second lies inside the window.
fn window(all: &[Interval], from: Instant, to: Instant) -> Window {
    let inside: Vec<&Interval> = all
        .iter()
        .filter(|i| i.at >= from + Duration::from_secs(1) && i.at <= to)
        .collect();
    let n = inside.len();
    if n == 0 {
        return Window::default();
    }
    let mut p95: Vec<f64> = inside.iter().map(|i| i.p95).collect();
    p95.sort_by(f64::total_cmp);
    Window {
        n,
        tps: inside.iter().map(|i| i.tps).sum::<f64>() / n as f64,
        p95_median: p95[n / 2],
        err: inside.iter().map(|i| i.err).sum::<f64>() / n as f64,
    }
}

struct CopyStats {
    read: usize,
    copied: usize,
    chunks: usize,
    secs: f64,
}

impl CopyStats {
    fn line(&self) -> String {
        format!(
            "{} rows read, {} copied, {} chunks in {:.2}s: {:.0} rows read/s, {:.0} rows copied/s",
            self.read,
            self.copied,
            self.chunks,
            self.secs,
            self.read as f64 / self.secs,
            self.copied as f64 / self.secs
        )
    }
}

fn side<'a>(conn: &'a mut Conn, name: &'a str) -> Side<'a> {
    Side { conn, name }
}

async fn copy_s0(
    s0: u16,
    s2: u16,
    moves: &(dyn Fn(u64) -> bool + Sync),
    chunk: usize,
    position: Position,
) -> Result<CopyStats> {
    let (mut source, mut target) = (root(s0).await?, root(s2).await?);
    let name = format!("127.0.0.1:{s0}");
    let (mut src, mut dst) = (side(&mut source, &name), side(&mut target, "s2"));
    create_like(&mut src, &mut dst, SCHEMA, TABLE).await?;
    let shape = TableShape::read(src.conn, &name, SCHEMA, TABLE, "id").await?;
    let started = Instant::now();
    let (mut read, mut copied, mut chunks) = (0, 0, 0);
    let mut after: Option<Vec<Value>> = None;
    loop {
        let c = copy_chunk(
            &mut src,
            &mut dst,
            &shape,
            after.as_deref(),
            chunk,
            moves,
            position,
        )
        .await?;
        read += c.read;
        copied += c.copied;
        chunks += 1;
        match c.last_key {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    Ok(CopyStats {
        read,
        copied,
        chunks,
        secs: started.elapsed().as_secs_f64(),
    })
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cpus} CPUs ({model}), load average {}", load.join(" "))
}

async fn run(args: &Args, dir: &Path) -> Result<()> {
    println!("machine: {}", machine());
    let position = if args.at_or_before {
        Position::AtOrBefore
    } else {
        Position::Exact
    };
    let t0 = Instant::now();
    let opts = SandboxOptions {
        dir: dir.to_path_buf(),
        shards: 2,
        replicas: 0,
        tables: TableLayout {
            sharded: vec![ShardedTable {
                table: TABLE.into(),
                column: "id".into(),
            }],
            reference: Vec::new(),
        },
        ..SandboxOptions::default()
    };
    let cluster = sandbox::up(&opts).await.context("sandbox up")?;
    let port = |shard: &str| {
        cluster
            .primary(shard)
            .map(|s| s.port)
            .ok_or_else(|| anyhow!("sandbox has no primary for {shard}"))
    };
    let (p0, p1) = (port("s0")?, port("s1")?);
    // The ring the sandbox's shard map describes (its vnodes), before and after s2.
    let vnodes = cluster
        .shard_map_toml()
        .get("keyspace")
        .and_then(|k| k.get(SCHEMA))
        .and_then(|k| k.get("vnodes"))
        .and_then(|v| v.as_integer())
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| anyhow!("the sandbox shard map has no vnodes"))?;
    let old = Ring::new(&["s0", "s1"], vnodes);
    let new = Ring::new(&["s0", "s1", "s2"], vnodes);
    println!(
        "sandbox up in {:.1}s: s0 :{p0}, s1 :{p1}",
        t0.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let (on0, on1) = tokio::try_join!(
        fill_shard(p0, args.rows, &old, 0),
        fill_shard(p1, args.rows, &old, 1)
    )?;
    println!(
        "filled {TABLE}: {on0} rows on s0, {on1} on s1 ({} total) in {:.1}s",
        on0 + on1,
        t.elapsed().as_secs_f64()
    );
    let added = sandbox::add_shard(dir).await.context("add shard")?;
    let p2 = added
        .servers
        .first()
        .map(|s| s.port)
        .ok_or_else(|| anyhow!("the added shard has no server"))?;
    println!("added {} :{p2}", added.name);
    let arcs = old.moved_arcs(&new);
    let moves = move |h: u64| arcs.iter().any(|a| a.from == 0 && a.contains(h));

    let idle = if args.no_idle_copy {
        None
    } else {
        // The same copy with nothing else running, then s2 emptied again for the real one.
        let stats = copy_s0(p0, p2, &moves, args.chunk, position).await?;
        root(p2)
            .await?
            .query_drop(format!("DROP TABLE {SCHEMA}.{TABLE}"))
            .await
            .context("dropping s2's copy")?;
        Some(stats)
    };

    let t = Instant::now();
    let history = purged(p0, Duration::from_secs(180)).await?;
    println!(
        "s0's undo history length {history} after waiting {:.1}s for InnoDB's purge",
        t.elapsed().as_secs_f64()
    );

    let mut cmd = sysbench(
        p0,
        args.rows,
        &[
            format!("--threads={}", args.threads),
            "--time=86400".into(),
            "--events=0".into(),
            "--report-interval=1".into(),
            "--percentile=95".into(),
            "run".into(),
        ],
    );
    // Line-buffered through the pipe: each report is timed by when it arrives.
    let mut line_buffered = Command::new("stdbuf");
    line_buffered
        .arg("-oL")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    cmd = line_buffered;
    println!("writers: {}", show(&cmd));
    let mut child = Killed(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting sysbench")?,
    );
    let stdout = child
        .0
        .stdout
        .take()
        .ok_or_else(|| anyhow!("sysbench has no stdout"))?;
    let (tx, rx) = mpsc::channel::<Interval>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(i) = parse_interval(&line, Instant::now()) {
                if tx.send(i).is_err() {
                    break;
                }
            }
        }
    });
    let start = Instant::now();
    let base_from = start + Duration::from_secs(args.warmup);
    tokio::time::sleep(Duration::from_secs(args.warmup + args.baseline)).await;
    let copy_from = Instant::now();
    let stats = copy_s0(p0, p2, &moves, args.chunk, position).await?;
    let copy_to = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.after)).await;
    let after_to = Instant::now();
    drop(child);
    let _ = reader.join();
    let all: Vec<Interval> = rx.try_iter().collect();

    let before = window(&all, base_from, copy_from);
    let during = window(&all, copy_from, copy_to);
    let after = window(&all, copy_to, after_to);
    let on_s2: u64 = root(p2)
        .await?
        .query_first(format!("SELECT COUNT(*) FROM {SCHEMA}.{TABLE}"))
        .await?
        .unwrap_or(0);

    println!();
    println!(
        "copy s0 -> s2 of {TABLE} ({} rows total, chunks of {}):",
        on0 + on1,
        args.chunk
    );
    if let Some(idle) = &idle {
        println!("  without writers: {}", idle.line());
    }
    println!(
        "  with writers:    {} ({on_s2} rows on s2 after)",
        stats.line()
    );
    println!(
        "writers on s0 (sysbench oltp_write_only, {} threads; mean of per-second tps, median of per-second p95):",
        args.threads
    );
    for (label, w) in [("before", &before), ("during", &during), ("after", &after)] {
        println!(
            "  {label:<7} {:>3} s  tps {:>8.1}  p95 {:>7.2} ms  err/s {:.2}",
            w.n, w.tps, w.p95_median, w.err
        );
    }
    if before.tps > 0.0 && during.n > 0 {
        let ratio = during.tps / before.tps;
        println!(
            "  during / before: tps {:.2} (bar >= 0.70: {}), p95 x{:.2}",
            ratio,
            if ratio >= 0.7 { "met" } else { "NOT met" },
            during.p95_median / before.p95_median
        );
    } else {
        println!("  during / before: no full second of sysbench inside a window (copy too short?)");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("reshard-copy-bench-{}", std::process::id()))
    });
    let _down = Down {
        dir: dir.clone(),
        keep: args.keep,
    };
    run(&args, &dir).await
}
