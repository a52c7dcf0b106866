//! Reading the proxy's TOML files (the config, a shard map): errors that name the file, the key
//! and the problem, with the values of secret keys kept out of them. Below `config` and
//! `shardmap`, which both read such files.

mod secret;

use std::path::Path;
use std::time::Duration;

/// Why a configuration or shard map could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {msg}")]
    Parse { file: String, msg: String },
    #[error("{file}: key `{key}`: {msg}")]
    Invalid {
        file: String,
        key: String,
        msg: String,
    },
}

impl ConfigError {
    /// toml's error text, which quotes the offending line, with every secret value (password,
    /// token) left out: `config/reload` answers it over HTTP and logs it. An error on a secret
    /// key's own line says only where it is.
    pub(crate) fn parse(path: &Path, text: &str, e: &toml::de::Error) -> Self {
        let place = e.span().map(|s| secret::line_col(text, s.start));
        let msg = match place {
            Some((line, col)) if secret::line_has_secret(text, line) => {
                format!("line {line}, column {col}: invalid value of a secret key (not shown)")
            }
            _ => {
                let mut msg = e.to_string().trim_end().to_string();
                for value in secret::values(text) {
                    msg = msg.replace(value.as_str(), "<secret>");
                }
                msg
            }
        };
        ConfigError::Parse {
            file: path.display().to_string(),
            msg,
        }
    }
}

/// Checks a lag limit in seconds: finite, positive and representable as a `Duration`.
pub(crate) fn check_lag_secs(secs: f64) -> Result<Duration, String> {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if secs > 0.0 => Ok(d),
        _ => Err(format!("{secs} is not a positive number of seconds")),
    }
}
