//! The `shardgate` command line: run the proxy, check files, drive the sandbox.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::Config;
use crate::sandbox::{self, SandboxOptions, ShardedTable, TableLayout};
use crate::shardmap::ShardMap;

#[derive(Parser)]
#[command(
    name = "shardgate",
    version,
    about = "MySQL routing and sharding proxy"
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a proxy config or a shard map file.
    Check { file: PathBuf },
    /// Print which shards and servers a statement goes to and how the results are combined,
    /// without running it.
    Explain {
        /// The proxy config whose shard map is used.
        #[arg(long)]
        config: PathBuf,
        /// The session's database (selects the keyspace); default: the first keyspace.
        #[arg(long)]
        database: Option<String>,
        /// The statement.
        sql: String,
    },
    /// Start or stop a local MariaDB cluster for trying shardgate and for its tests.
    Sandbox {
        #[command(subcommand)]
        action: SandboxAction,
    },
    /// Start a sandbox cluster and the proxy in front of it; Ctrl-C tears both down.
    Demo {
        #[command(flatten)]
        shape: Shape,
    },
    /// Inspect or flush a running proxy's result cache through its admin API.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Online resharding of a consistent-hash keyspace: add or remove a shard.
    Reshard {
        #[command(subcommand)]
        action: ReshardAction,
    },
    /// Every keyspace, shard and server of a running proxy: role, health, lag, load, pool use.
    Topology {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Change a shard's primary: a planned switchover when the primary answers (statements
    /// wait, none fail), else a failover to the most advanced replica.
    Failover {
        /// `keyspace/shard`, or a shard name.
        #[arg(long)]
        shard: String,
        /// The replica to promote (planned switchover); default: the most advanced one.
        #[arg(long, value_name = "HOST:PORT")]
        to: Option<String>,
        /// Fail over even though a replica still replicates from the unreachable primary, or
        /// though no replica holds every write the proxy acknowledged (those writes are lost).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make a fenced former primary a replica of the primary that replaced it.
    Rejoin {
        /// The former primary, `host:port` as in the shard map.
        server: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The top statement shapes: count, errors, rows, total/avg/p99 time, shards, cache hits.
    Queries {
        /// `total` (time), `count`, `errors`, `p99` or `rows`.
        #[arg(long, default_value = "total")]
        sort: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make the running proxy read its config file again (shard map, users, routing limits)
    /// without dropping clients.
    Reload {
        /// Apply even when the file moves a shard's primary away from the live one.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Failure handling's events (detections, decisions, steps) and what runs now.
    Events {
        /// Only events after this id.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep printing new events until Ctrl-C.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// Size, entries, hits, misses, evictions and invalidations of the result cache.
    Stats {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Drop every cached result, or those that read one table.
    Flush {
        /// Only results that read this table.
        #[arg(long, value_name = "DB.TABLE")]
        table: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum ReshardAction {
    /// What adding or removing a shard would move (ring arcs, rows per table, the new map);
    /// writes nothing.
    Plan {
        /// The keyspace (consistent_hash) to reshard.
        /// The keyspace whose workflow it is.
        #[arg(long)]
        keyspace: String,
        /// A new shard: NAME=PRIMARY[,REPLICA...] (`host:port` each).
        #[arg(
            long,
            value_name = "NAME=PRIMARY[,REPLICA...]",
            conflicts_with = "remove",
            required_unless_present = "remove"
        )]
        add: Option<String>,
        /// A shard to empty and remove.
        #[arg(long, value_name = "NAME")]
        remove: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Start a workflow: copy the moving rows, then follow the sources' binlogs until the
    /// cutover. Give the change, or a plan saved from `reshard plan --json`.
    #[command(group(
        clap::ArgGroup::new("change").required(true).args(["add", "remove", "plan_file"])
    ))]
    Start {
        /// The keyspace (consistent_hash) to reshard; with --plan-file, the plan's.
        #[arg(long, required_unless_present = "plan_file")]
        keyspace: Option<String>,
        /// A new shard: NAME=PRIMARY[,REPLICA...] (`host:port` each).
        #[arg(long, value_name = "NAME=PRIMARY[,REPLICA...]")]
        add: Option<String>,
        /// A shard to empty and remove.
        #[arg(long, value_name = "NAME")]
        remove: Option<String>,
        /// A plan saved from `shardgate reshard plan --json`; started as it is if the shard
        /// map has not changed since.
        #[arg(long, value_name = "FILE")]
        plan_file: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// A workflow's progress (every workflow without --keyspace): copy, streams, verify,
    /// cutover attempts.
    Status {
        /// Only this keyspace's workflow.
        #[arg(long)]
        keyspace: Option<String>,
        /// Print it again every second while a copy, verify or completion runs (Ctrl-C stops).
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Compare the moved rows on source and target (in the background: see `status`).
    Verify {
        /// The keyspace whose workflow it is.
        #[arg(long)]
        keyspace: String,
        /// Wait for the verify to end and print it; exit non-zero if it found differences.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Switch the moving keys to their new shards; exits non-zero if the attempt aborted.
    Cutover(CutoverArgs),
    /// Switch the keys back to their old shards after a cutover; exits non-zero if the
    /// attempt aborted.
    Rollback(CutoverArgs),
    /// Delete the moved rows from their old shards and end the workflow.
    Complete {
        /// The keyspace whose workflow it is.
        #[arg(long)]
        keyspace: String,
        /// Wait until the rows are deleted; exit non-zero if the workflow ends otherwise.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Stop a workflow before its cutover and remove what it copied.
    Cancel {
        /// The keyspace whose workflow it is.
        #[arg(long)]
        keyspace: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `reshard cutover` and `reshard rollback`.
#[derive(clap::Args)]
struct CutoverArgs {
    /// The keyspace whose workflow it is.
    #[arg(long)]
    keyspace: String,
    /// The longest the keyspace's writes may wait (ms); past it the attempt aborts and the
    /// held statements go on as before it (default 500).
    #[arg(long, value_name = "N")]
    max_pause_ms: Option<u64>,
    #[command(flatten)]
    admin: AdminArgs,
}

impl CutoverArgs {
    async fn run(self, rollback: bool) -> anyhow::Result<()> {
        let req = crate::reshard::manager::CutoverRequest {
            keyspace: self.keyspace,
            max_pause_ms: self.max_pause_ms,
        };
        let target = self.admin.target()?;
        let out = crate::admin::reshard_commands::cutover(&target, &req, rollback, self.admin.json)
            .await?;
        print_output(&out);
        Ok(())
    }
}

/// How an admin command finds the proxy: its config file, or an address and a token.
#[derive(clap::Args)]
struct AdminArgs {
    /// The proxy's config: the admin API is at its proxy.admin_listen, with proxy.admin_token.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The admin API's address (overrides the config's).
    #[arg(long, value_name = "HOST:PORT")]
    admin: Option<String>,
    /// The admin token (overrides the config's).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Print the API's JSON answer as it came.
    #[arg(long)]
    json: bool,
}

impl AdminArgs {
    fn target(&self) -> anyhow::Result<crate::admin::commands::Target> {
        crate::admin::commands::Target::resolve(
            self.config.as_deref(),
            self.admin.as_deref(),
            self.token.as_deref(),
        )
    }
}

#[derive(clap::Args)]
struct Shape {
    /// Directory for the servers' datadirs, sockets, cluster.json and shardgate.toml.
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, default_value_t = 2)]
    shards: usize,
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Application user created on every server and in the proxy config.
    #[arg(long, default_value = "app")]
    user: String,
    #[arg(long, default_value = "app")]
    password: String,
    /// Shard TABLE of keyspace `app` by the hash of COLUMN (repeatable). Makes `app`
    /// consistent_hash over every shard; without it `app` is unsharded on s0.
    #[arg(long = "sharded-table", value_name = "TABLE:COLUMN")]
    sharded_tables: Vec<ShardedTable>,
    /// Copy TABLE on every shard (repeatable; needs --sharded-table).
    #[arg(
        long = "reference-table",
        value_name = "TABLE",
        value_parser = sandbox::parse_table,
        requires = "sharded_tables"
    )]
    reference_tables: Vec<String>,
    /// Cache every read through the proxy for TTL (`500ms`, `30s`, `5m`; a bare number is
    /// seconds): writes through the proxy invalidate what they change.
    #[arg(long = "cache-all", value_name = "TTL", value_parser = parse_ttl)]
    cache_all: Option<u64>,
    /// Write N proxy configs (shardgate.toml, shardgate-2.toml, ...) that share the topology
    /// through a sandbox etcd (started when N > 1).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    proxies: u16,
    /// Start the sandbox etcd and keep the topology there even with one proxy.
    #[arg(long)]
    etcd: bool,
}

/// A TTL as milliseconds: `500ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 500ms, 30s or 5m"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    };
    match ms {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(format!(
            "'{s}' is not a positive duration like 500ms, 30s or 5m"
        )),
    }
}

impl Shape {
    /// The sandbox options, or a usage error for `command` (e.g. `["sandbox", "up"]`) when the
    /// tables given do not fit together (a table named twice).
    fn options(&self, command: &[&str]) -> Result<SandboxOptions, clap::Error> {
        let mut o = SandboxOptions::default();
        if let Some(d) = &self.dir {
            o.dir = d.clone();
        }
        o.shards = self.shards;
        o.replicas = self.replicas;
        o.user = self.user.clone();
        o.password = self.password.clone();
        o.tables = TableLayout {
            sharded: self.sharded_tables.clone(),
            reference: self.reference_tables.clone(),
        };
        o.cache_all_ms = self.cache_all;
        o.proxies = usize::from(self.proxies);
        o.etcd = self.etcd;
        match o.tables.validate() {
            Ok(()) => Ok(o),
            Err(msg) => Err(usage_error(command, msg)),
        }
    }
}

/// A clap error whose usage line is that of the subcommand at `path`.
fn usage_error(path: &[&str], msg: String) -> clap::Error {
    // Built first so the subcommands carry their full name ("shardgate sandbox up").
    let mut cmd = Cli::command();
    cmd.build();
    for name in path {
        match cmd.find_subcommand(name) {
            Some(sub) => cmd = sub.clone(),
            None => break,
        }
    }
    cmd.error(clap::error::ErrorKind::ArgumentConflict, msg)
}

#[derive(Subcommand)]
enum SandboxAction {
    /// Start the cluster; returns when every server answers and every replica replicates.
    Up {
        #[command(flatten)]
        shape: Shape,
    },
    /// Stop the servers listed in DIR/cluster.json.
    Down {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Start one more shard (primary and replicas, same settings) for trying `reshard`; the
    /// proxy configs' shard maps are left as they are.
    AddShard {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Stop a shard's servers and drop them from DIR/cluster.json (refused while a shard map
    /// still routes to it).
    RemoveShard {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The shard's name, e.g. s2.
        #[arg(long)]
        shard: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    // The proxy's workers run their own event loops; this one drives commands and signals.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shardgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: logs redirected to a file stay greppable.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            let cfg = Config::load(&config)?;
            crate::proxy::serve(cfg).await
        }
        Command::Check { file } => check(&file),
        Command::Explain {
            config,
            database,
            sql,
        } => {
            let cfg = Config::load(&config)?;
            let map = cfg.shard_map();
            let health = crate::backend::health::Health::new(&map);
            let split = cfg.routing.read_write_split;
            let planner =
                crate::planner::Planner::new(map, &health, split, |ks| cfg.max_replica_lag(ks));
            let ctx = crate::planner::PlanContext {
                db: database.as_deref(),
                default_keyspace: None,
            };
            print!("{}", crate::planner::explain::explain(&planner, &sql, &ctx));
            Ok(())
        }
        Command::Sandbox {
            action: SandboxAction::Up { shape },
        } => {
            let opts = shape
                .options(&["sandbox", "up"])
                .unwrap_or_else(|e| e.exit());
            let cluster = sandbox::up(&opts).await?;
            print_cluster(&cluster);
            Ok(())
        }
        Command::Sandbox {
            action: SandboxAction::Down { dir },
        } => {
            let dir = dir.unwrap_or_else(|| SandboxOptions::default().dir);
            let n = sandbox::down(&dir)?;
            println!("stopped {n} servers in {}", dir.display());
            Ok(())
        }
        Command::Sandbox {
            action: SandboxAction::AddShard { dir },
        } => {
            let dir = dir.unwrap_or_else(|| SandboxOptions::default().dir);
            let added = sandbox::add_shard(&dir).await?;
            added.servers.iter().for_each(print_server);
            println!("not in the proxies' shard map yet; move keys to it with:");
            println!(
                "  shardgate reshard plan --keyspace app --add {}",
                added.add_arg()
            );
            println!(
                "remove with: shardgate sandbox remove-shard --dir {} --shard {}",
                dir.display(),
                added.name
            );
            Ok(())
        }
        Command::Sandbox {
            action: SandboxAction::RemoveShard { dir, shard },
        } => {
            let dir = dir.unwrap_or_else(|| SandboxOptions::default().dir);
            let gone = sandbox::remove_shard(&dir, &shard).await?;
            println!(
                "removed shard {shard}: stopped {} servers in {}",
                gone.len(),
                dir.display()
            );
            Ok(())
        }
        Command::Demo { shape } => demo(shape).await,
        Command::Reshard { action } => reshard(action).await,
        Command::Cache {
            action: CacheAction::Stats { admin },
        } => {
            let out = crate::admin::commands::cache_stats(&admin.target()?, admin.json).await?;
            print_output(&out);
            Ok(())
        }
        Command::Cache {
            action: CacheAction::Flush { table, admin },
        } => {
            let target = admin.target()?;
            let out =
                crate::admin::commands::cache_flush(&target, table.as_deref(), admin.json).await?;
            print_output(&out);
            Ok(())
        }
        Command::Topology { admin } => {
            let out = crate::admin::commands::topology(&admin.target()?, admin.json).await?;
            print_output(&out);
            Ok(())
        }
        Command::Failover {
            shard,
            to,
            force,
            admin,
        } => {
            let target = admin.target()?;
            let out =
                crate::admin::commands::failover(&target, &shard, to.as_deref(), force, admin.json)
                    .await?;
            print_output(&out);
            Ok(())
        }
        Command::Queries { sort, limit, admin } => {
            let target = admin.target()?;
            let out = crate::admin::commands::queries(&target, &sort, limit, admin.json).await?;
            print_output(&out);
            Ok(())
        }
        Command::Reload { force, admin } => {
            let target = admin.target()?;
            let out = crate::admin::commands::reload(&target, force, admin.json).await?;
            print_output(&out);
            Ok(())
        }
        Command::Rejoin { server, admin } => {
            let out = crate::admin::commands::rejoin(&admin.target()?, &server, admin.json).await?;
            print_output(&out);
            Ok(())
        }
        Command::Events {
            after,
            follow,
            admin,
        } => {
            let target = admin.target()?;
            let out = crate::admin::commands::events(&target, after, follow, admin.json).await?;
            print_output(&out);
            Ok(())
        }
    }
}

/// The `reshard` commands.
async fn reshard(action: ReshardAction) -> anyhow::Result<()> {
    use crate::admin::reshard_commands as rc;
    let out = match action {
        ReshardAction::Plan {
            keyspace,
            add,
            remove,
            admin,
        } => {
            let req = crate::admin::reshard::PlanRequest {
                keyspace,
                add,
                remove,
            };
            crate::admin::commands::reshard_plan(&admin.target()?, &req, admin.json).await?
        }
        ReshardAction::Start {
            keyspace,
            add,
            remove,
            plan_file,
            admin,
        } => {
            let req = rc::start_request(keyspace.as_deref(), add, remove, plan_file.as_deref())?;
            rc::start(&admin.target()?, &req, admin.json).await?
        }
        ReshardAction::Status {
            keyspace,
            follow,
            admin,
        } => rc::status(&admin.target()?, keyspace.as_deref(), follow, admin.json).await?,
        ReshardAction::Verify {
            keyspace,
            wait,
            admin,
        } => rc::verify(&admin.target()?, &keyspace, wait, admin.json).await?,
        ReshardAction::Cutover(args) => return args.run(false).await,
        ReshardAction::Rollback(args) => return args.run(true).await,
        ReshardAction::Complete {
            keyspace,
            wait,
            admin,
        } => rc::complete(&admin.target()?, &keyspace, wait, admin.json).await?,
        ReshardAction::Cancel { keyspace, admin } => {
            rc::cancel(&admin.target()?, &keyspace, admin.json).await?
        }
    };
    print_output(&out);
    Ok(())
}

/// Prints `out`, ending it with a newline if it has none (raw JSON answers do not).
fn print_output(out: &str) {
    if out.ends_with('\n') {
        print!("{out}");
    } else {
        println!("{out}");
    }
}

/// Accepts either kind of file: a proxy config, or a stand-alone shard map.
fn check(file: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let looks_like_map = text.parse::<toml::Table>().is_ok_and(|t| {
        t.contains_key("keyspace") && !t.contains_key("users") && !t.contains_key("proxy")
    });
    if looks_like_map {
        let map = ShardMap::load(file)?;
        println!(
            "{}: valid shard map with {} keyspace(s)",
            file.display(),
            map.keyspace.len()
        );
    } else {
        let cfg = Config::load(file)?;
        println!(
            "{}: valid config: listen {}, {} user(s), {} keyspace(s)",
            file.display(),
            cfg.proxy.listen,
            cfg.users.len(),
            cfg.keyspace.len()
        );
    }
    Ok(())
}

/// One line per server, as `sandbox up` lists them.
fn print_server(s: &sandbox::ServerInfo) {
    println!(
        "{:<4} {:<8} 127.0.0.1:{:<6} pid {:<8} {}",
        s.shard,
        format!("{:?}", s.role).to_lowercase(),
        s.port,
        s.pid,
        s.datadir.display()
    );
}

fn print_cluster(c: &sandbox::Cluster) {
    c.servers.iter().for_each(print_server);
    if let Some(e) = &c.etcd {
        println!(
            "{:<4} {:<8} 127.0.0.1:{:<6} pid {:<8} {}",
            "etcd",
            "",
            e.client_port,
            e.pid,
            e.data_dir.display()
        );
    }
    println!("{}", c.keyspace_summary());
    println!("cluster: {}", c.dir.join("cluster.json").display());
    let configs = c.proxy_configs();
    if configs.len() == 1 && c.etcd.is_none() {
        println!("proxy config: {}", c.dir.join("shardgate.toml").display());
    } else {
        for (n, path) in configs.iter().enumerate() {
            println!("proxy config {}: {}", n + 1, path.display());
        }
    }
    println!(
        "stop with: shardgate sandbox down --dir {}",
        c.dir.display()
    );
}

async fn demo(shape: Shape) -> anyhow::Result<()> {
    let opts = shape.options(&["demo"]).unwrap_or_else(|e| e.exit());
    let cluster = sandbox::up(&opts).await?;
    print_cluster(&cluster);
    let result = demo_proxy(&cluster).await;
    let stopped = sandbox::down(&cluster.dir);
    if let Ok(n) = &stopped {
        println!("stopped {n} servers");
    }
    result?;
    stopped?;
    Ok(())
}

/// Runs a proxy per config of the sandbox in this process until Ctrl-C, then stops them all.
async fn demo_proxy(cluster: &sandbox::Cluster) -> anyhow::Result<()> {
    let mut proxies = Vec::new();
    let mut started = Ok(());
    for config in cluster.proxy_configs() {
        match demo_start(cluster, &config).await {
            Ok(p) => proxies.push(p),
            Err(e) => {
                started = Err(e);
                break;
            }
        }
    }
    let r = match started {
        Ok(()) => {
            if let Some(etcd) = &cluster.etcd {
                println!();
                println!(
                    "The {} proxies share the shard map, failover locks and holds through etcd at {} (prefix {}).",
                    proxies.len(),
                    etcd.endpoint(),
                    sandbox::ETCD_PREFIX
                );
                println!(
                    "To put them behind one address, see examples/haproxy-shardgate.cfg in the shardgate sources."
                );
            }
            let what = if proxies.len() == 1 {
                "proxy"
            } else {
                "proxies"
            };
            println!("Press Ctrl-C to stop the {what} and the sandbox.");
            tokio::signal::ctrl_c().await.map_err(anyhow::Error::from)
        }
        Err(e) => Err(e),
    };
    for p in proxies {
        p.stop().await?;
    }
    r
}

/// Starts the proxy of `config` and prints how to reach it.
async fn demo_start(
    cluster: &sandbox::Cluster,
    config: &std::path::Path,
) -> anyhow::Result<crate::proxy::Running> {
    let cfg = Config::load(config)?;
    let token = cfg.proxy.admin_token.clone().unwrap_or_default();
    let cache = !cfg.cache.rules.is_empty();
    let id = cfg.topology.proxy_id.clone();
    let proxy = crate::proxy::start(cfg).await?;
    let addr = proxy.local_addr();
    println!();
    match id {
        Some(id) => println!("shardgate {id} is listening on {addr}"),
        None => println!("shardgate is listening on {addr}"),
    }
    println!(
        "  DSN:     mysql://{}:{}@{}:{}/app",
        cluster.user,
        cluster.password,
        addr.ip(),
        addr.port()
    );
    println!(
        "  connect: mariadb -h {} -P {} -u {} -p{} app",
        addr.ip(),
        addr.port(),
        cluster.user,
        cluster.password
    );
    println!(
        "  admin:   curl -H 'Authorization: Bearer {token}' http://{}/metrics",
        proxy.admin_addr
    );
    if cache {
        println!(
            "  cache:   shardgate cache stats --config {}",
            config.display()
        );
    }
    if let Some(shard) = cluster
        .shard_names()
        .into_iter()
        .find(|s| !cluster.replicas(s).is_empty())
    {
        println!(
            "  failover: shardgate failover --shard {shard} --config {} (and `shardgate events --follow --config ...` to watch)",
            config.display()
        );
    }
    Ok(proxy)
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls_take_units() {
        assert_eq!(parse_ttl("500ms"), Ok(500));
        assert_eq!(parse_ttl("30s"), Ok(30_000));
        assert_eq!(parse_ttl("30"), Ok(30_000));
        assert_eq!(parse_ttl("5m"), Ok(300_000));
        assert_eq!(parse_ttl("1h"), Ok(3_600_000));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("5 parsecs").is_err());
        assert!(parse_ttl("").is_err());
    }
}
