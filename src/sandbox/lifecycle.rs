//! `up` and `down`: the sandbox's whole life. `up` either returns a replicating cluster or stops
//! everything it started; `down` stops exactly the pids in `cluster.json` (servers and etcd) and
//! removes the datadirs, sockets, `cluster.json` and the proxy configs (DIR itself stays).
//! The steps `up` takes per server (plan, copy, spawn, wait) also serve `add-shard`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::cluster::{cluster_json, config_toml, Cluster, Role, ServerInfo};
use super::error::{io, SandboxError};
use super::etcd::{self, Etcd};
use super::template::{self, Binaries};
use super::{free_ports, process, replication, server, SandboxOptions};

/// Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Starts a sandbox cluster in `opts.dir` and returns once every server answers and every
/// replica replicates and has caught up. Refuses if a sandbox there is still running.
pub async fn up(opts: &SandboxOptions) -> Result<Cluster, SandboxError> {
    if opts.shards == 0 {
        return Err(SandboxError::Options("shards must be at least 1".into()));
    }
    if opts.proxies == 0 {
        return Err(SandboxError::Options("proxies must be at least 1".into()));
    }
    if opts.user.is_empty() || opts.user == "root" || opts.user == "repl" {
        return Err(SandboxError::Options(format!(
            "user '{}' cannot be the application user (empty, or reserved for the sandbox)",
            opts.user
        )));
    }
    opts.tables.validate().map_err(SandboxError::Options)?;
    let started = Instant::now();
    let bins = template::find_binaries()?;
    let dir =
        std::path::absolute(&opts.dir).map_err(io(format!("resolving {}", opts.dir.display())))?;
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    clear_previous(&dir)?;
    let template = template::ensure(&bins).await?;
    let mut cluster = plan(&dir, opts)?;
    copy_datadirs(&template, &cluster.servers).await?;

    let result = async {
        spawn_all(&bins, &mut cluster.servers)?;
        // Saved at once so `down` can find these pids even if this `up` is interrupted.
        cluster.save()?;
        if opts.uses_etcd() {
            // While the servers boot.
            let d = dir.clone();
            let started = tokio::task::spawn_blocking(move || Etcd::start(&d))
                .await
                .map_err(|e| SandboxError::Internal(format!("etcd start task failed: {e}")))?;
            cluster.etcd = Some(started?);
            cluster.save()?;
        }
        wait_all(&bins, &mut cluster.servers).await?;
        // Ports or pids may have changed on a retry.
        cluster.save()?;
        replication::setup(&cluster).await?;
        let ports =
            free_ports(2 * opts.proxies).map_err(io("finding free ports for the proxies"))?;
        let cfgs: Vec<_> = ports
            .chunks(2)
            .enumerate()
            .map(|(i, p)| {
                cluster.nth_proxy_config(
                    i + 1,
                    format!("127.0.0.1:{}", p[0]),
                    format!("127.0.0.1:{}", p[1]),
                )
            })
            .collect();
        cluster.write_files(&cfgs)
    }
    .await;

    if let Err(e) = result {
        if let Some(e) = &cluster.etcd {
            let _ = e.stop(Duration::from_secs(5));
        }
        stop_started(&cluster.servers).await;
        // Datadirs (and their error.log) stay for inspection; the next `up` replaces them.
        let _ = std::fs::remove_file(cluster_json(&dir));
        return Err(e);
    }
    tracing::info!(
        dir = %dir.display(),
        servers = cluster.servers.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "sandbox up"
    );
    Ok(cluster)
}

/// Stops the sandbox in `dir` (SIGTERM, up to 20s, then SIGKILL) and removes its server files.
/// Returns how many servers were running; 0 when there is no `cluster.json`.
pub fn down(dir: &Path) -> Result<usize, SandboxError> {
    let dir = std::path::absolute(dir).map_err(io(format!("resolving {}", dir.display())))?;
    if !cluster_json(&dir).exists() {
        return Ok(0);
    }
    let cluster = Cluster::load(&dir)?;
    let targets: Vec<(u32, &Path)> = cluster
        .servers
        .iter()
        .map(|s| (s.pid, s.datadir.as_path()))
        .collect();
    let stopped = process::stop(&targets, Duration::from_secs(20)).map_err(|left| {
        SandboxError::Stop(format!(
            "mariadbd pids {left:?} of {} (files left in place)",
            dir.display()
        ))
    })?;
    stop_etcd(&dir, &cluster)?;
    remove_servers(&dir, &cluster)?;
    remove(&cluster_json(&dir))?;
    remove_configs(&dir, &cluster)?;
    Ok(stopped)
}

/// Stops the recorded etcd, or one found on `DIR/etcd` that an interrupted `up` started before
/// it could record it (the cmdline check makes it this sandbox's).
fn stop_etcd(dir: &Path, cluster: &Cluster) -> Result<(), SandboxError> {
    let data_dir = dir.join(etcd::DATA_DIR);
    let Some(pid) = cluster
        .etcd
        .as_ref()
        .filter(|e| e.is_running())
        .map(|e| e.pid)
        .or_else(|| process::find_etcd_on(&data_dir))
    else {
        return Ok(());
    };
    process::stop_checked(&[pid], Duration::from_secs(10))
        .map(|_| ())
        .map_err(|_| SandboxError::Stop(format!("etcd pid {pid} on {}", data_dir.display())))
}

/// Refuses if the sandbox recorded in `dir` still runs; otherwise removes its leftovers.
fn clear_previous(dir: &Path) -> Result<(), SandboxError> {
    if !cluster_json(dir).exists() {
        return Ok(());
    }
    match Cluster::load(dir) {
        Ok(old)
            if old.servers.iter().any(ServerInfo::is_running)
                || process::find_etcd_on(&dir.join(etcd::DATA_DIR)).is_some() =>
        {
            return Err(SandboxError::AlreadyRunning {
                dir: dir.display().to_string(),
            })
        }
        Ok(old) => {
            remove_servers(dir, &old)?;
            remove_configs(dir, &old)?;
        }
        Err(e) => tracing::warn!(error = %e, "ignoring an unreadable cluster.json"),
    }
    remove(&cluster_json(dir))?;
    // Shard map versions of the old cluster's failovers name servers that are gone.
    remove(&dir.join(super::cluster::STATE_FILE))?;
    remove(&config_toml(dir))
}

/// Names, ports and server ids: `s<i>-primary` then `s<i>-replica<n>`, ids from 1.
fn plan(dir: &Path, opts: &SandboxOptions) -> Result<Cluster, SandboxError> {
    let per_shard = 1 + opts.replicas;
    let ports = free_ports(opts.shards * per_shard).map_err(io("finding free ports"))?;
    let mut servers = Vec::new();
    for (shard, ports) in ports.chunks(per_shard).enumerate() {
        let first_id = servers.len() as u32 + 1;
        servers.extend(plan_shard(dir, &format!("s{shard}"), ports, first_id)?);
    }
    Ok(Cluster {
        dir: dir.to_path_buf(),
        user: opts.user.clone(),
        password: opts.password.clone(),
        servers,
        tables: opts.tables.clone(),
        cache_all_ms: opts.cache_all_ms,
        proxies: opts.proxies,
        etcd: None,
    })
}

/// Shard `name`'s servers, not started: `NAME-primary` on `ports[0]`, then `NAME-replica<n>`
/// on the next ports, with server ids counting up from `first_id`.
pub(crate) fn plan_shard(
    dir: &Path,
    name: &str,
    ports: &[u16],
    first_id: u32,
) -> Result<Vec<ServerInfo>, SandboxError> {
    let mut servers = Vec::new();
    for (n, port) in ports.iter().enumerate() {
        let (role, server) = match n {
            0 => (Role::Primary, format!("{name}-primary")),
            _ => (Role::Replica, format!("{name}-replica{n}")),
        };
        let socket = dir.join(format!("{server}.sock"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(SandboxError::Options(format!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes: use a shorter --dir",
                socket.display()
            )));
        }
        servers.push(ServerInfo {
            shard: name.to_string(),
            role,
            host: "127.0.0.1".into(),
            port: *port,
            pid: 0,
            datadir: dir.join(&server),
            socket,
            server_id: first_id + n as u32,
        });
    }
    Ok(servers)
}

/// Fresh copies of the template, one per server, concurrently.
pub(crate) async fn copy_datadirs(
    template: &Path,
    servers: &[ServerInfo],
) -> Result<(), SandboxError> {
    let mut tasks = JoinSet::new();
    for s in servers {
        let (src, dst, sock) = (template.to_path_buf(), s.datadir.clone(), s.socket.clone());
        tasks.spawn_blocking(move || {
            remove(&sock)?;
            if dst.exists() {
                std::fs::remove_dir_all(&dst).map_err(io(format!("removing {}", dst.display())))?;
            }
            server::copy_dir(&src, &dst).map_err(io(format!(
                "copying the template {} to {}",
                src.display(),
                dst.display()
            )))
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| SandboxError::Internal(format!("copy task failed: {e}")))??;
    }
    Ok(())
}

/// Starts a mariadbd per server, detached, recording its pid (not waiting for it to answer).
pub(crate) fn spawn_all(bins: &Binaries, servers: &mut [ServerInfo]) -> Result<(), SandboxError> {
    for s in servers {
        s.pid = server::spawn(
            &bins.mariadbd,
            &server::instance_args(s),
            &s.datadir.join("mariadbd.out"),
        )?;
    }
    Ok(())
}

/// Stops the servers a failed start left running (SIGTERM, up to 5s, then SIGKILL).
pub(crate) async fn stop_started(servers: &[ServerInfo]) {
    let targets: Vec<(u32, PathBuf)> = servers.iter().map(|s| (s.pid, s.datadir.clone())).collect();
    let _ = tokio::task::spawn_blocking(move || {
        let refs: Vec<(u32, &Path)> = targets.iter().map(|(p, d)| (*p, d.as_path())).collect();
        process::stop(&refs, Duration::from_secs(5))
    })
    .await;
}

/// Waits for every spawned server concurrently; a server whose port was taken moves to another
/// (so the caller saves `servers` again).
pub(crate) async fn wait_all(
    bins: &Binaries,
    servers: &mut [ServerInfo],
) -> Result<(), SandboxError> {
    let mut tasks = JoinSet::new();
    for (idx, s) in servers.iter().enumerate() {
        let (bin, mut info) = (bins.mariadbd.clone(), s.clone());
        tasks.spawn(async move {
            let r = server::start(&bin, &mut info, true).await;
            (idx, info, r)
        });
    }
    let mut first_err = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((idx, info, r)) => {
                servers[idx] = info;
                if let Err(e) = r {
                    first_err.get_or_insert(e);
                }
            }
            Err(e) => {
                first_err.get_or_insert(SandboxError::Internal(format!("start task failed: {e}")));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Removes every proxy config `cluster` wrote.
fn remove_configs(dir: &Path, cluster: &Cluster) -> Result<(), SandboxError> {
    remove(&config_toml(dir))?;
    cluster.proxy_configs().iter().try_for_each(|f| remove(f))
}

/// Removes the datadirs and sockets of `cluster`'s servers and its etcd's data dir, but only
/// inside `dir` (etcd.log stays for a look after a failed test; a fresh etcd truncates it).
fn remove_servers(dir: &Path, cluster: &Cluster) -> Result<(), SandboxError> {
    let etcd_data = dir.join(etcd::DATA_DIR);
    if etcd_data.exists() {
        std::fs::remove_dir_all(&etcd_data)
            .map_err(io(format!("removing {}", etcd_data.display())))?;
    }
    remove_server_files(dir, &cluster.servers)
}

/// Removes the datadirs and sockets of `servers`, but only inside `dir`.
pub(crate) fn remove_server_files(dir: &Path, servers: &[ServerInfo]) -> Result<(), SandboxError> {
    for s in servers {
        if s.datadir.starts_with(dir) && s.datadir != dir && s.datadir.exists() {
            std::fs::remove_dir_all(&s.datadir)
                .map_err(io(format!("removing {}", s.datadir.display())))?;
        }
        if s.socket.starts_with(dir) {
            remove(&s.socket)?;
        }
    }
    Ok(())
}

/// Removes a file; a missing one is fine.
pub(crate) fn remove(path: &Path) -> Result<(), SandboxError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("removing {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

// Starting a server is the lifecycle's business (it runs `server`); the cluster only
// describes the servers, so `cluster` and `server` do not import each other.
impl Cluster {
    /// Starts a stopped server `idx` again on the same port and datadir (its role decides
    /// `read_only`), waits until it answers, and records the new pid in `cluster.json`.
    pub async fn start_server(&mut self, idx: usize) -> Result<(), SandboxError> {
        let bins = template::find_binaries()?;
        let mut info = self.server(idx)?.clone();
        if info.is_running() {
            return Ok(());
        }
        info.pid = 0;
        server::start(&bins.mariadbd, &mut info, false).await?;
        self.servers[idx] = info;
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_names_roles_and_ids() {
        let opts = SandboxOptions {
            shards: 2,
            replicas: 2,
            ..Default::default()
        };
        let c = plan(Path::new("/sb"), &opts).expect("plan");
        let names: Vec<String> = c.servers.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "s0-primary",
                "s0-replica1",
                "s0-replica2",
                "s1-primary",
                "s1-replica1",
                "s1-replica2"
            ]
        );
        let ids: Vec<u32> = c.servers.iter().map(|s| s.server_id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
        assert_eq!(c.servers[3].role, Role::Primary);
        assert_eq!(c.servers[0].socket, Path::new("/sb/s0-primary.sock"));
    }

    #[test]
    fn long_dirs_are_refused_for_their_socket_path() {
        let long = PathBuf::from(format!("/{}", "x".repeat(120)));
        let err = plan(&long, &SandboxOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("shorter --dir"), "{err}");
    }

    #[test]
    fn down_without_cluster_json_stops_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(down(dir.path()).expect("down"), 0);
    }

    #[test]
    fn down_stops_an_etcd_on_the_sandbox_dir_that_was_never_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = plan(dir.path(), &SandboxOptions::default()).expect("plan");
        c.servers.iter_mut().for_each(|s| s.pid = u32::MAX - 1);
        c.save().expect("save");
        // As if `up` was interrupted between starting etcd and recording it.
        let e = Etcd::start(dir.path()).expect("etcd starts");
        let err = clear_previous(dir.path()).unwrap_err();
        assert!(matches!(err, SandboxError::AlreadyRunning { .. }), "{err}");
        assert_eq!(down(dir.path()).expect("down"), 0);
        assert!(!e.is_running(), "etcd pid {} still runs", e.pid);
        assert!(!e.data_dir.exists());
    }

    #[test]
    fn stale_cluster_json_is_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = plan(dir.path(), &SandboxOptions::default()).expect("plan");
        for s in &mut c.servers {
            s.pid = u32::MAX - 1; // never a live pid
            std::fs::create_dir_all(&s.datadir).expect("mkdir");
        }
        c.save().expect("save");
        clear_previous(dir.path()).expect("stale state is cleared");
        assert!(!cluster_json(dir.path()).exists());
        assert!(!c.servers[0].datadir.exists());
    }
}
