//! The local store: shard map versions in one JSON file (`[ha] state_file`), for one proxy.

use std::path::Path;

use super::{MapVersion, TopologyError};

pub fn load(file: &Path) -> Result<Vec<MapVersion>, TopologyError> {
    let err = |msg: String| TopologyError::Read {
        file: file.display().to_string(),
        msg,
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    let versions: Vec<MapVersion> = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    if let Some(v) = versions.last() {
        v.map
            .validate(&file.display().to_string())
            .map_err(|e| err(e.to_string()))?;
    }
    Ok(versions)
}

/// Written to a temporary file and renamed, so a crash leaves the old or the new, never half.
pub fn save(file: &Path, versions: &[MapVersion]) -> Result<(), TopologyError> {
    let err = |msg: String| TopologyError::Write {
        file: file.display().to_string(),
        msg,
    };
    let text = serde_json::to_string_pretty(versions).map_err(|e| err(e.to_string()))?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, file).map_err(|e| err(e.to_string()))
}
