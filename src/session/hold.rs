//! Why a session keeps its server connections between statements instead of giving them
//! back to the pool (multiplexing): only state that no replay can recreate elsewhere.

#[derive(Debug, Default)]
pub struct Hold {
    /// The server reported an open transaction (explicit, or implicit with autocommit off).
    pub txn: bool,
    /// The session depends on its connection for good (a temporary table, a named lock, a
    /// cursor...): the reason, for the log.
    pub life: Option<&'static str>,
    /// Parameter data was sent for a statement the next execute will run.
    pub long_data: bool,
    /// The last statement left state the next one may read (FOUND_ROWS(), SHOW WARNINGS).
    pub next: bool,
}

impl Hold {
    /// Holds that last until their cause is gone, whatever the next statement is.
    pub fn sticky(&self) -> bool {
        self.txn || self.life.is_some() || self.long_data
    }

    pub fn any(&self) -> bool {
        self.sticky() || self.next
    }
}
