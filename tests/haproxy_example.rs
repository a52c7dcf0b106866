//! `examples/haproxy-shardgate.cfg` as the README describes it: HAProxy in TCP mode in front of
//! the two proxies of `sandbox up --proxies 2`, checking each one's `/healthz`. Clients reach
//! both proxies through it, and a proxy that dies is taken out so new clients still connect.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

const HAPROXY: &str = "/usr/sbin/haproxy";

/// The HAProxy child, killed when dropped even if the test fails.
struct HaproxyProcess(Child);

impl Drop for HaproxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example with its placeholder ports replaced by these proxies' (and a free front port).
fn example_for(front: u16, proxies: &[common::AdminProxy]) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/haproxy-shardgate.cfg"
    ))
    .expect("examples/haproxy-shardgate.cfg");
    let admin_port = |p: &common::AdminProxy| p.admin.rsplit(':').next().expect("port").to_string();
    let mut text = text.replace("bind 127.0.0.1:3306", &format!("bind 127.0.0.1:{front}"));
    for (placeholder, p) in [("6033", &proxies[0]), ("6133", &proxies[1])] {
        text = text.replace(
            &format!("127.0.0.1:{placeholder} "),
            &format!("127.0.0.1:{} ", p.port),
        );
    }
    for (placeholder, p) in [("6080", &proxies[0]), ("6180", &proxies[1])] {
        text = text.replace(
            &format!("check port {placeholder}"),
            &format!("check port {}", admin_port(p)),
        );
    }
    text
}

/// Connects through HAProxy until it works or `limit` passes.
async fn connect_within(url: &str, limit: Duration) -> mysql_async::Conn {
    let deadline = Instant::now() + limit;
    loop {
        match mysql_async::Conn::from_url(url).await {
            Ok(c) => return c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no connection through HAProxy within {limit:?}: {e}"),
        }
    }
}

/// How often `shape` (lower case, as the digest shows it) ran on proxy `p`.
async fn ran(p: &common::AdminProxy, shape: &str) -> u64 {
    let r = p.get("/api/v1/queries?sort=count&limit=100").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    v["queries"]
        .as_array()
        .expect("queries")
        .iter()
        .filter(|q| q["text"].as_str().is_some_and(|t| t.contains(shape)))
        .filter_map(|q| q["count"].as_u64())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_example_spreads_clients_and_drops_a_dead_proxy() {
    assert!(
        std::path::Path::new(HAPROXY).exists(),
        "{HAPROXY} missing: run .ci/setup"
    );
    common::raise_fd_limit();
    let sb = common::start_cluster_with(&["--shards", "1", "--replicas", "0", "--proxies", "2"]);
    let mut proxies = sb.admin_proxies("");
    let front = shardgate::sandbox::free_port().expect("port");
    let cfg = sb.dir.join("haproxy.cfg");
    std::fs::write(&cfg, example_for(front, &proxies)).expect("write haproxy.cfg");
    let check = Command::new(HAPROXY)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .expect("haproxy -c");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let log = std::fs::File::create(sb.dir.join("haproxy.log")).expect("log");
    let _haproxy = HaproxyProcess(
        Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn haproxy"),
    );
    let url = common::app_url(front, "app");

    // Four clients held open at once: leastconn gives each proxy some of them.
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(connect_within(&url, Duration::from_secs(10)).await);
    }
    for c in &mut conns {
        let one: Option<i64> = c
            .query_first("SELECT 1 AS haproxy_probe")
            .await
            .expect("probe through haproxy");
        assert_eq!(one, Some(1));
    }
    for p in &proxies {
        assert!(
            ran(p, "haproxy_probe").await >= 1,
            "proxy on {} got no client through HAProxy",
            p.port
        );
    }
    for c in conns {
        let _ = c.disconnect().await;
    }

    // proxy-1 dies: once its check fails (2 x 1 s), every new client lands on proxy-2.
    drop(proxies.remove(0));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ok_in_a_row = 0;
    while ok_in_a_row < 10 {
        assert!(
            Instant::now() < deadline,
            "clients still reach the dead proxy"
        );
        let served = async {
            let mut c = mysql_async::Conn::from_url(url.as_str()).await?;
            let v: Option<i64> = c.query_first("SELECT 2 AS after_drop").await?;
            c.disconnect().await?;
            Ok::<_, mysql_async::Error>(v)
        }
        .await;
        ok_in_a_row = if matches!(served, Ok(Some(2))) {
            ok_in_a_row + 1
        } else {
            0
        };
    }
    assert!(ran(&proxies[0], "after_drop").await >= 10);
}
