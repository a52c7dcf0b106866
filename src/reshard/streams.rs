//! A workflow's catch-up streams: each reads one primary's binlog (from the position its target
//! stored, else the workflow's start position) and applies the changes of the moving keys to
//! the other shard. A broken stream starts again from what its target stored; the applied
//! position is also published in memory, which the cutover waits on.
//!
//! A source transaction with nothing for the target moves only the in-memory position; the
//! stored one follows at the next transaction that applies something, or twice a second, so a
//! busy source with few moving keys costs the target one write per half second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::apply::Applier;
use super::binlog::{BinlogError, BinlogReader, ReaderConfig, Record};
use super::manager::{lock, ReshardError};
use super::state::Direction;
use super::workflow::{binlog_pos, copy_err, Runner};
use crate::ha::gtid::GtidPos;
use crate::shardmap::host_port;

const PURGED: &str = "the source purged binlogs the catch-up still needs";

/// How often the stored position follows the applied one when nothing else writes it.
const STORE_EVERY: Duration = Duration::from_millis(500);

pub struct StreamHandle {
    /// Index into the workflow's `streams`.
    pub index: usize,
    pub direction: Direction,
    /// Everything up to here is applied (or needed nothing).
    pub applied: watch::Receiver<GtidPos>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl StreamHandle {
    /// Stops the stream after its current transaction and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

pub fn spawn(runner: Arc<Runner>, index: usize) -> StreamHandle {
    let direction = lock(&runner.state).streams[index].direction;
    let (applied_tx, applied) = watch::channel(GtidPos::default());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(runner, index, applied_tx, stopped));
    StreamHandle {
        index,
        direction,
        applied,
        stop,
        task,
    }
}

async fn run(
    runner: Arc<Runner>,
    index: usize,
    applied: watch::Sender<GtidPos>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        if *stopped.borrow() {
            return;
        }
        match run_once(&runner, index, &applied, &mut stopped).await {
            Ok(()) => return,
            Err(e) if e.to_string().contains(PURGED) => {
                // Nothing to retry: what the stream needs is gone from the source.
                runner.fail(&e).await;
                return;
            }
            Err(e) => {
                failures += 1;
                let name = lock(&runner.state).streams[index].name.clone();
                if failures == 1 || failures.is_multiple_of(30) {
                    runner.event(format!("stream {name}: {e}; retrying"));
                }
                runner.edit(|w| w.streams[index].state = format!("retrying: {e}"));
                let _ = runner.save().await;
                metrics::counter!("shardgate_reshard_stream_errors_total").increment(1);
                let wait = Duration::from_millis(200 * u64::from(failures.min(10)));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped.changed() => return,
                }
            }
        }
    }
}

fn reader_id(name: &str) -> u32 {
    // Distinct per stream and far from the sandbox's and usual deployments' server ids.
    let h =
        crate::shardmap::ring::key_hash(&crate::shardmap::ring::KeyValue::Bytes(name.as_bytes()));
    2_000_000_000 + (h % 100_000_000) as u32
}

async fn run_once(
    runner: &Arc<Runner>,
    index: usize,
    applied: &watch::Sender<GtidPos>,
    stopped: &mut watch::Receiver<bool>,
) -> Result<(), ReshardError> {
    let st = lock(&runner.state).streams[index].clone();
    let ks = runner.keyspace();
    let source_addr = runner
        .primary_of(&st.source)
        .ok_or_else(|| ReshardError::Failed(format!("no shard named {}", st.source)))?;
    let target_addr = runner.primary_of(&st.target).unwrap_or_default();
    let mut target = runner.connect_shard(&st.target).await?;
    Applier::prepare(&mut target, &target_addr)
        .await
        .map_err(copy_err)?;
    let stored = Applier::stored_position(&mut target, &target_addr, &st.name)
        .await
        .map_err(copy_err)?;
    let from_text = stored.unwrap_or_else(|| st.start_position.clone());
    let from = GtidPos::parse(&from_text).ok_or_else(|| {
        ReshardError::Failed(format!("stream {}: bad position '{from_text}'", st.name))
    })?;
    // Shapes from the source: the tables this stream carries.
    let mut meta = runner.connect_shard(&st.source).await?;
    let tables: Vec<String> = {
        let w = lock(&runner.state);
        let mut t: Vec<String> = w
            .plan
            .tables
            .iter()
            .filter(|t| t.kind == st.kind)
            .map(|t| t.table.clone())
            .collect();
        t.dedup();
        t
    };
    let mut shapes = Vec::new();
    for t in &tables {
        shapes.push(super::copying::shape_of(runner, &mut meta, &source_addr, t).await?);
    }
    let moves = if st.kind == "reference" {
        Arc::new(|_: u64| true) as Arc<dyn Fn(u64) -> bool + Send + Sync>
    } else {
        // Keys moving from the old owner to the new, whichever way this stream runs.
        match st.direction {
            Direction::Forward => runner.mover(&st.source, &st.target),
            Direction::Reverse => runner.mover(&st.target, &st.source),
        }
    };
    let mut applier = Applier::new(&st.name, shapes, move |h| moves(h));
    let (host, port) = host_port(&source_addr)
        .ok_or_else(|| ReshardError::Failed(format!("'{source_addr}' is not host:port")))?;
    let creds = runner.creds();
    let mut cfg = ReaderConfig::new(
        &host,
        port,
        &creds.user,
        &creds.password,
        reader_id(&st.name),
    );
    cfg.schemas = vec![ks.clone()];
    let mut reader = BinlogReader::start(&cfg, &from)
        .await
        .map_err(|e| stream_err(&st.name, e))?;
    applied.send_replace(from.clone());
    runner.edit(|w| {
        let s = &mut w.streams[index];
        s.state = "running".into();
        s.applied_position = from.to_string();
    });
    let _ = runner.save().await;
    let mut batch = Batch::default();
    let mut last_store = Instant::now();
    let mut last_look = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result: Result<(), ReshardError> = loop {
        // Gather source transactions while more are ready at once; apply them together when
        // the stream is caught up (nothing ready), or the batch is big or old.
        let rec = match futures_util::FutureExt::now_or_never(reader.next()) {
            Some(r) => r,
            None => {
                if let Err(e) = batch
                    .flush(
                        &mut applier,
                        &mut target,
                        &target_addr,
                        &mut last_store,
                        applied,
                        runner,
                        index,
                    )
                    .await
                {
                    break Err(e);
                }
                tokio::select! {
                    _ = stopped.changed() => break Ok(()),
                    _ = tick.tick() => {
                        look(runner, index, &ks, &st.name, &mut meta, &source_addr, reader.position(), batch.last_ts).await;
                        last_look = Instant::now();
                        continue;
                    }
                    rec = reader.next() => rec,
                }
            }
        };
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                applier.discard();
                break Err(stream_err(&st.name, e));
            }
        };
        match rec {
            Record::Change(c) => {
                if let Err(e) = applier.add(&c) {
                    break Err(copy_err(e));
                }
            }
            Record::Statement { .. } => {}
            Record::Commit { timestamp, .. } => {
                batch.txns += 1;
                batch.last_ts = Some(timestamp);
                batch.position = Some(reader.position().clone());
                if batch.started.is_none() {
                    batch.started = Some(Instant::now());
                }
                if applier.pending_len() >= BATCH_ROWS
                    || batch.started.is_some_and(|t| t.elapsed() >= BATCH_AGE)
                {
                    if let Err(e) = batch
                        .flush(
                            &mut applier,
                            &mut target,
                            &target_addr,
                            &mut last_store,
                            applied,
                            runner,
                            index,
                        )
                        .await
                    {
                        break Err(e);
                    }
                }
                if last_look.elapsed() >= Duration::from_secs(1) {
                    if *stopped.borrow() {
                        break Ok(());
                    }
                    look(
                        runner,
                        index,
                        &ks,
                        &st.name,
                        &mut meta,
                        &source_addr,
                        reader.position(),
                        batch.last_ts,
                    )
                    .await;
                    last_look = Instant::now();
                }
            }
        }
    };
    if result.is_ok() && !applier.has_pending() {
        // Stopping between transactions: store where it got, so a restart replays less.
        if let Some(pos) = batch
            .position
            .take()
            .or_else(|| Some(reader.position().clone()))
        {
            let _ = applier
                .commit(&mut target, &target_addr, &pos.to_string())
                .await;
        }
    }
    reader.close().await;
    let _ = target.disconnect().await;
    let _ = meta.disconnect().await;
    result
}

/// Source transactions read and not yet applied (whole ones only: a partial one's changes
/// wait in the applier for its commit).
#[derive(Default)]
struct Batch {
    txns: u64,
    position: Option<GtidPos>,
    last_ts: Option<u32>,
    started: Option<Instant>,
}

/// Rows (changes) per target transaction, and the longest a change waits to be applied.
const BATCH_ROWS: usize = 500;
const BATCH_AGE: Duration = Duration::from_millis(50);

impl Batch {
    /// Applies the gathered transactions in one target transaction with their position (the
    /// position alone is stored at most every `STORE_EVERY` when nothing else needs writing),
    /// then tells the cutover how far the stream is.
    #[allow(clippy::too_many_arguments)]
    async fn flush(
        &mut self,
        applier: &mut Applier,
        target: &mut mysql_async::Conn,
        target_addr: &str,
        last_store: &mut Instant,
        applied: &watch::Sender<GtidPos>,
        runner: &Runner,
        index: usize,
    ) -> Result<(), ReshardError> {
        let Some(pos) = self.position.clone() else {
            return Ok(());
        };
        let mut rows = 0;
        if !runner.coordinating() {
            // Another proxy may take the workflow over (see `coordination`): nothing is
            // written until this one holds its lock under a fresh lease again.
            return Err(ReshardError::Failed(
                "this proxy does not coordinate the workflow now (its etcd lease is not fresh)"
                    .into(),
            ));
        }
        if applier.has_pending() || last_store.elapsed() >= STORE_EVERY {
            let a = applier
                .commit(target, target_addr, &pos.to_string())
                .await
                .map_err(copy_err)?;
            rows = (a.upserts + a.deletes) as u64;
            *last_store = Instant::now();
        }
        applied.send_replace(pos.clone());
        let txns = std::mem::take(&mut self.txns);
        self.started = None;
        runner.edit(|w| {
            let s = &mut w.streams[index];
            s.transactions += txns;
            s.rows_applied += rows;
            s.applied_position = pos.to_string();
        });
        Ok(())
    }
}

/// Refreshes a stream's figures: transactions behind its source and lag.
#[allow(clippy::too_many_arguments)]
async fn look(
    runner: &Runner,
    index: usize,
    ks: &str,
    name: &str,
    meta: &mut mysql_async::Conn,
    source_addr: &str,
    position: &GtidPos,
    last_ts: Option<u32>,
) {
    let behind = match binlog_pos(meta, source_addr).await {
        Ok(p) => GtidPos::parse(&p).map(|src| behind_by(&src, position)),
        Err(_) => None,
    };
    let lag = match (behind, last_ts) {
        (Some(0), _) => Some(0.0),
        (_, Some(ts)) => Some((unix_now() - f64::from(ts)).max(0.0)),
        _ => None,
    };
    if let Some(l) = lag {
        metrics::gauge!("shardgate_reshard_lag_seconds", "keyspace" => ks.to_string(), "stream" => name.to_string()).set(l);
    }
    runner.edit(|w| {
        let s = &mut w.streams[index];
        s.behind_transactions = behind;
        s.lag_seconds = lag;
    });
}

/// Transactions `src` has that `applied` has not, summed over domains.
fn behind_by(src: &GtidPos, applied: &GtidPos) -> u64 {
    src.0
        .iter()
        .map(|(d, g)| {
            let mine = applied.0.get(d).map_or(0, |a| a.seq);
            g.seq.saturating_sub(mine)
        })
        .sum()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn stream_err(name: &str, e: BinlogError) -> ReshardError {
    match e {
        BinlogError::Purged { .. } => ReshardError::Failed(format!(
            "stream {name}: {e}: {PURGED}; cancel the workflow and start it again (and keep \
             binlogs longer: expire_logs_days)"
        )),
        e => ReshardError::Failed(format!("stream {name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_counts_each_domain() {
        let src = GtidPos::parse("0-1-100,1-2-50").expect("pos");
        let applied = GtidPos::parse("0-1-90").expect("pos");
        assert_eq!(behind_by(&src, &applied), 60);
        assert_eq!(behind_by(&applied, &src), 0);
    }

    #[test]
    fn reader_ids_differ_per_stream() {
        assert_ne!(reader_id("app s0->s2"), reader_id("app s1->s2"));
        assert!(reader_id("app s0->s2") >= 2_000_000_000);
    }
}
