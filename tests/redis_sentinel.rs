//! Issue 24: Redis Sentinel, next to standalone Redis and Redis Cluster. One master, one
//! replica and three sentinels (`redis-server --sentinel`, quorum 2), all local processes on
//! free ports; two instances of the app (processes, one `secret_key`) behind a round-robin
//! front, against the real Logto-like provider, with `redis_sentinel_master` and the
//! sentinels in `redis_url`. Under load (a signed-in user browsing a page that refreshes
//! every second or so), the master is killed: the sentinels promote the replica, and the
//! instances follow it without a restart. Afterwards the refreshes, a sign-out reaching both
//! instances, and the keys all live on the promoted replica, and no grant was revoked.
//!
//! Needs `redis-server` (scripts/setup) and `npm ci --prefix tests/provider`. Figures are
//! printed (`cargo test --all-features --test redis_sentinel -- --nocapture`).

#[path = "support/app.rs"]
mod app;
#[path = "support/deployment.rs"]
mod deployment;
#[path = "support/instances.rs"]
mod instances;
#[path = "support/real_provider.rs"]
mod real_provider;
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/round_robin.rs"]
mod round_robin;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deployment::{Jar, SETTLE};
use real_provider::{ALICE, ALICE_SUB};
use redis_server::RedisServer;
use reqwest::StatusCode;
use serde_json::json;
use tokio::process::{Child, Command};

const ENTRY: &str = "instance_process";
const MASTER: &str = "mymaster";
/// `redis_timeout_ms` of the instances: the longest a request waits for Redis.
const REDIS_TIMEOUT_MS: u64 = 500;

/// Not a test of its own: the entry point of the instance processes (does nothing here).
#[test]
fn instance_process() {
    instances::serve_if_instance();
}

/// A `redis-server --sentinel` on a free port, with its config file in a directory of its
/// own (a sentinel rewrites it); killed when dropped.
struct SentinelProcess {
    port: u16,
    _child: Child,
    dir: std::path::PathBuf,
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SentinelProcess {
    fn start(master_port: u16) -> SentinelProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "rocket_logto-sentinel-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile \"\"\n\
                 sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 10000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server --sentinel (scripts/setup installs redis-server)");
        SentinelProcess {
            port,
            _child: child,
            dir,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port of the master this sentinel names now, if it answers.
    async fn master_port(&self) -> Option<u16> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut c = tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await
        .ok()?
        .ok()?;
        let addr: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(MASTER)
            .query_async(&mut c)
            .await
            .ok()?;
        addr.and_then(|(_, port)| port.parse().ok())
    }

    /// How many other sentinels and replicas this one knows of.
    async fn peers(&self) -> Option<(usize, usize)> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        let sentinels: Vec<redis::Value> = redis::cmd("SENTINEL")
            .arg("sentinels")
            .arg(MASTER)
            .query_async(&mut c)
            .await
            .ok()?;
        let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
            .arg("replicas")
            .arg(MASTER)
            .query_async(&mut c)
            .await
            .ok()?;
        Some((sentinels.len(), replicas.len()))
    }
}

async fn info(server: &RedisServer, section: &str) -> String {
    let mut c = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("INFO")
        .arg(section)
        .query_async(&mut c)
        .await
        .unwrap_or_default()
}

async fn key_count(server: &RedisServer) -> usize {
    let mut c = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("rocket_logto:*")
        .query_async(&mut c)
        .await
        .unwrap();
    keys.len()
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `limit`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instances_follow_a_sentinel_failover_under_load() {
    let mut master = RedisServer::start().await;
    let master_port = master.port;
    let replica =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &master_port.to_string()]).await;
    wait_for("the replica is in sync", SETTLE, || async {
        info(&replica, "replication")
            .await
            .contains("master_link_status:up")
    })
    .await;
    let sentinels: Vec<SentinelProcess> = (0..3)
        .map(|_| SentinelProcess::start(master_port))
        .collect();
    // Each sentinel must know the replica and the two others, or it cannot fail over.
    for s in &sentinels {
        wait_for("a sentinel knows its peers", SETTLE, || async {
            s.peers().await == Some((2, 1))
        })
        .await;
    }
    let urls: Vec<String> = sentinels.iter().map(SentinelProcess::url).collect();
    let dep = deployment::deploy(2, ENTRY, |_| {
        json!({
            "redis_url": urls.join(","),
            "redis_sentinel_master": MASTER,
            "redis_timeout_ms": REDIS_TIMEOUT_MS,
        })
    })
    .await;
    let mut jar = Jar::default();
    dep.sign_in_as(ALICE, &mut jar).await;
    // Access tokens of 62 s, 2 s past the crate's 60 s refresh margin: under load, a
    // refresh every 2 s or so, each one leased in Redis.
    dep.provider.set_access_token_ttl(62).await;
    dep.until_all("/shopping", &jar, StatusCode::OK, SETTLE)
        .await;
    assert!(
        key_count(&master).await > 0,
        "the instances write to the master"
    );

    // Load: one browser, `/shopping` and `/me` in turn, keeping its cookies up to date.
    let stop = Arc::new(AtomicBool::new(false));
    let statuses: Arc<Mutex<BTreeMap<u16, usize>>> = Arc::default();
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let shared_jar = Arc::new(tokio::sync::Mutex::new(jar.clone()));
    let dep = Arc::new(dep);
    let load = {
        let (stop, statuses, slowest, jar, dep) = (
            stop.clone(),
            statuses.clone(),
            slowest.clone(),
            shared_jar.clone(),
            dep.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let path = if n.is_multiple_of(2) {
                    "/shopping"
                } else {
                    "/me"
                };
                n += 1;
                let mut jar = jar.lock().await;
                let started = Instant::now();
                let answer = dep.browse(path, &mut jar).await;
                let took = started.elapsed();
                drop(jar);
                let mut s = slowest.lock().unwrap();
                *s = (*s).max(took);
                drop(s);
                *statuses
                    .lock()
                    .unwrap()
                    .entry(answer.status.as_u16())
                    .or_default() += 1;
            }
        })
    };
    wait_for("load is running", SETTLE, || async {
        statuses.lock().unwrap().get(&200).copied().unwrap_or(0) >= 20
    })
    .await;
    let refreshes_before = dep.refreshes().await;

    // The master dies.
    master.stop().await;
    let killed = Instant::now();
    let replica_port = replica.port;
    for s in &sentinels {
        wait_for("the sentinels promote the replica", SETTLE, || async {
            s.master_port().await == Some(replica_port)
        })
        .await;
    }
    let promoted = killed.elapsed();
    assert!(info(&replica, "replication").await.contains("role:master"));
    let at_promotion = statuses.lock().unwrap().clone();
    // The instances follow: refreshes happen again (each one leased on the new master).
    let followed = wait_for("refreshes resume on the new master", SETTLE, || async {
        dep.refreshes().await >= refreshes_before + 3
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let statuses = statuses.lock().unwrap().clone();
    let slowest = *slowest.lock().unwrap();
    println!(
        "sentinel: replica promoted {promoted:?} after the master died; refreshes resumed \
         {followed:?} later; answers during the run {statuses:?} (at promotion {at_promotion:?}); \
         slowest request {slowest:?}"
    );
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503),
        "only 200 and bounded 503s: {statuses:?}"
    );
    // A request waits at most the Redis timeout a few times over (connect, command, a
    // sentinel lookup), never for the whole failover.
    assert!(
        slowest < Duration::from_millis(REDIS_TIMEOUT_MS * 8),
        "a request took {slowest:?}"
    );
    assert!(
        dep.provider.grant_valid(ALICE_SUB).await,
        "no grant revoked"
    );
    assert_eq!(dep.provider.stats().await["revoked_grants"], 0);

    // Everything now lives on the promoted replica, and a sign-out on one instance reaches
    // the other through it (write, then pub/sub).
    let jar = shared_jar.lock().await.clone();
    dep.until_all("/me", &jar, StatusCode::OK, SETTLE).await;
    let mut signing_out = jar.clone();
    let out = dep.browse("/logto/sign-out", &mut signing_out).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{out:?}");
    let reached = dep
        .until_all("/me", &jar, StatusCode::UNAUTHORIZED, SETTLE)
        .await;
    println!("sentinel: a sign-out after the failover reached both instances in {reached:?}");
    assert!(key_count(&replica).await > 0);
}
