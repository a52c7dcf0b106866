//! `[topology]`: where the live shard map is kept. The default (`store = "file"`) is one proxy
//! with `[ha] state_file`; `store = "etcd"` lets several proxies share one map, one promoter per
//! failover and coordinated holds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// This proxy alone; versions kept in `[ha] state_file` (or memory).
    #[default]
    File,
    /// Shared by every proxy of the cluster through etcd (v3 API).
    Etcd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySection {
    #[serde(default)]
    pub store: StoreKind,
    /// etcd client endpoints, `host:port` or `http://host:port`.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Every key of this cluster lives under it; proxies of one cluster share it, another
    /// cluster on the same etcd uses another.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// This proxy's name among the cluster's proxies (unique per cluster). Default: the host
    /// name and the MySQL listen port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_id: Option<String>,
    /// A proxy that cannot renew its lease for this long counts as gone: its locks are released
    /// and holds stop waiting for it. etcd's minimum is about 2 s.
    #[serde(default = "default_lease_ttl_secs")]
    pub lease_ttl_secs: u64,
    /// Per etcd request.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_prefix() -> String {
    "/shardgate/default".into()
}
fn default_lease_ttl_secs() -> u64 {
    5
}
fn default_request_timeout_ms() -> u64 {
    2000
}

impl Default for TopologySection {
    fn default() -> Self {
        TopologySection {
            store: StoreKind::File,
            endpoints: Vec::new(),
            prefix: default_prefix(),
            proxy_id: None,
            lease_ttl_secs: default_lease_ttl_secs(),
            request_timeout_ms: default_request_timeout_ms(),
        }
    }
}

impl TopologySection {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Why this section cannot be used: `(key, message)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.store == StoreKind::Etcd && self.endpoints.is_empty() {
            return Err((
                "topology.endpoints",
                "store = \"etcd\" needs at least one endpoint, e.g. [\"127.0.0.1:2379\"]".into(),
            ));
        }
        if !self.prefix.starts_with('/') || self.prefix.len() < 2 || self.prefix.ends_with('/') {
            return Err((
                "topology.prefix",
                format!(
                    "'{}' must start with '/', not end with one, and name something",
                    self.prefix
                ),
            ));
        }
        if !(2..=300).contains(&self.lease_ttl_secs) {
            return Err((
                "topology.lease_ttl_secs",
                "must be between 2 and 300 seconds".into(),
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err((
                "topology.request_timeout_ms",
                "must be at least 1 millisecond".into(),
            ));
        }
        if let Some(id) = &self.proxy_id {
            if id.is_empty() || id.contains('/') {
                return Err((
                    "topology.proxy_id",
                    format!("'{id}' must be non-empty and contain no '/'"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_store_is_the_default_and_etcd_needs_endpoints() {
        let t: TopologySection = toml::from_str("").expect("empty");
        assert_eq!(t.store, StoreKind::File);
        assert!(t.check().is_ok());
        let t: TopologySection = toml::from_str("store = \"etcd\"").expect("etcd");
        assert_eq!(t.check().map_err(|e| e.0), Err("topology.endpoints"));
        for (text, key) in [
            ("prefix = \"shardgate\"", "topology.prefix"),
            ("prefix = \"/a/\"", "topology.prefix"),
            ("lease_ttl_secs = 1", "topology.lease_ttl_secs"),
            ("proxy_id = \"a/b\"", "topology.proxy_id"),
        ] {
            let t: TopologySection = toml::from_str(text).expect(text);
            assert_eq!(t.check().map_err(|e| e.0), Err(key), "{text}");
        }
        assert!(toml::from_str::<TopologySection>("store = \"zookeeper\"").is_err());
    }
}
