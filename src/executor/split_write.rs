//! Split write: a write on several shards' primaries, each its own statement (the same
//! UPDATE/DELETE, or an INSERT's rows for that shard), run one after the other; their OKs add
//! up to the client's one (`OkSum`). Not atomic: the first error stops it, and the shards
//! before it keep their part.

use std::future::Future;
use std::sync::Arc;

use crate::backend::Pools;
use crate::protocol::consts::com;
use crate::protocol::packet::OkInfo;

use super::ok_sum::OkSum;
use super::{connection, ExecError, Identity, Pinned};

/// Statements the proxy runs on a session's shard connections for an OK the client does not
/// see: the held connections in the proxy, answers in memory in the tests.
pub trait ShardStatements: Send {
    /// Runs `sql` on the connection to `addr`: its OK and the OK's info text.
    fn run_for_ok(
        &mut self,
        addr: &Arc<str>,
        sql: &[u8],
    ) -> impl Future<Output = Result<(OkInfo, Vec<u8>), ExecError>> + Send;
}

/// The session's connections (taken from the pools as needed, made to carry its database
/// and variables).
pub struct HeldConnections<'a> {
    pub pools: &'a Pools,
    pub pinned: &'a mut Pinned,
    pub who: Identity<'a>,
}

impl ShardStatements for HeldConnections<'_> {
    async fn run_for_ok(
        &mut self,
        addr: &Arc<str>,
        sql: &[u8],
    ) -> Result<(OkInfo, Vec<u8>), ExecError> {
        let conn = connection(self.pools, self.pinned, addr, &self.who).await?;
        match conn.command_ok(com::QUERY, sql).await {
            Ok(Ok(ok)) => Ok(ok),
            Ok(Err(e)) => Err(ExecError::Database(e)),
            Err(e) => {
                self.pinned.discard(addr);
                Err(e.into())
            }
        }
    }
}

/// What a split write did.
pub struct SplitOutcome {
    /// The summed OK, or the error that stopped it.
    pub result: Result<OkSum, ExecError>,
    /// The shards whose part was written (before the error, if one stopped it).
    pub wrote: Vec<Arc<str>>,
}

/// Runs each part in turn; `multi_row_insert`: the parts are one multi-row INSERT's rows.
pub async fn split_write<S: ShardStatements>(
    shards: &mut S,
    parts: &[(Arc<str>, Vec<u8>)],
    multi_row_insert: bool,
) -> SplitOutcome {
    let mut total = OkSum::new(multi_row_insert);
    let mut wrote = Vec::with_capacity(parts.len());
    for (addr, sql) in parts {
        match shards.run_for_ok(addr, sql).await {
            Ok((ok, info)) => {
                total.add(&ok, &info);
                wrote.push(addr.clone());
            }
            Err(e) => {
                return SplitOutcome {
                    result: Err(e),
                    wrote,
                }
            }
        }
    }
    SplitOutcome {
        result: Ok(total),
        wrote,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packet::ErrInfo;

    /// A shard's answer: an OK (affected rows, info text) or an ERR's code.
    type Answer = Result<(u64, &'static str), u16>;

    /// Each shard's answer, by address.
    struct Answers {
        ok: Vec<(&'static str, Answer)>,
        ran: Vec<String>,
    }

    impl ShardStatements for Answers {
        async fn run_for_ok(
            &mut self,
            addr: &Arc<str>,
            _sql: &[u8],
        ) -> Result<(OkInfo, Vec<u8>), ExecError> {
            self.ran.push(addr.to_string());
            let (_, answer) = self
                .ok
                .iter()
                .find(|(a, _)| **a == **addr)
                .expect("an answer for every shard");
            match answer {
                Ok((rows, info)) => Ok((
                    OkInfo {
                        affected_rows: *rows,
                        ..Default::default()
                    },
                    info.as_bytes().to_vec(),
                )),
                Err(code) => Err(ExecError::Database(ErrInfo {
                    code: *code,
                    state: "23000".into(),
                    message: "duplicate".into(),
                })),
            }
        }
    }

    fn parts(addrs: &[&str]) -> Vec<(Arc<str>, Vec<u8>)> {
        addrs
            .iter()
            .map(|a| (Arc::from(*a), b"UPDATE t SET x = 1".to_vec()))
            .collect()
    }

    #[tokio::test]
    async fn the_shards_oks_add_up_to_one() {
        let mut shards = Answers {
            ok: vec![
                ("s1", Ok((2, "Rows matched: 2  Changed: 2  Warnings: 0"))),
                ("s2", Ok((1, "Rows matched: 3  Changed: 1  Warnings: 0"))),
            ],
            ran: vec![],
        };
        let out = split_write(&mut shards, &parts(&["s1", "s2"]), false).await;
        let total = out.result.expect("both wrote");
        assert_eq!(total.ok.affected_rows, 3);
        assert_eq!(
            total.info(),
            b"Rows matched: 5  Changed: 3  Warnings: 0".to_vec()
        );
        assert_eq!(out.wrote.len(), 2);
    }

    #[tokio::test]
    async fn the_first_error_stops_the_rest_and_says_who_wrote() {
        let mut shards = Answers {
            ok: vec![("s1", Ok((1, ""))), ("s2", Err(1062)), ("s3", Ok((1, "")))],
            ran: vec![],
        };
        let out = split_write(&mut shards, &parts(&["s1", "s2", "s3"]), true).await;
        assert!(matches!(out.result, Err(ExecError::Database(ref e)) if e.code == 1062));
        assert_eq!(out.wrote, vec![Arc::<str>::from("s1")]);
        assert_eq!(shards.ran, vec!["s1", "s2"], "s3 never ran");
    }
}
