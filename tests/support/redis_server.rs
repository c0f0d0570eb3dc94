//! Throwaway Redis servers for the tests: Debian's `redis-server` (installed by
//! `scripts/setup`) on a free loopback port, with no persistence (`--save "" --appendonly
//! no`), killed when dropped. Also a 3-node Redis Cluster.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The longest `redis-server` may take to say "Ready to accept connections" (or a cluster
/// to form). The waits end at the event, so this ceiling only matters when something is
/// broken, not when a shared runner is busy.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A port nobody listens on now (and, when `bus`, whose cluster-bus port +10000 is free too).
fn free_port(bus: bool) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        if !bus {
            return port;
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A running `redis-server`.
pub struct RedisServer {
    pub port: u16,
    args: Vec<String>,
    dir: Option<PathBuf>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port.
    pub async fn start() -> RedisServer {
        Self::start_with(&[]).await
    }

    /// Starts a server with extra arguments (e.g. `["--requirepass", "pw"]`).
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        for _ in 0..5 {
            let port = free_port(false);
            let mut server = RedisServer {
                port,
                args: extra.iter().map(|s| s.to_string()).collect(),
                dir: None,
                child: None,
            };
            if server.spawn().await {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// A cluster node (in its own directory, for `nodes.conf`).
    async fn start_node() -> RedisServer {
        for _ in 0..5 {
            let port = free_port(true);
            let dir = std::env::temp_dir()
                .join(format!("rocket_logto-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("node directory");
            let mut server = RedisServer {
                port,
                args: vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    "nodes.conf".into(),
                    "--dir".into(),
                    dir.display().to_string(),
                ],
                dir: Some(dir),
                child: None,
            };
            if server.spawn().await {
                return server;
            }
        }
        panic!("a Redis Cluster node did not start on any of 5 free ports");
    }

    /// Spawns the process on `self.port` and waits for its "ready" line; false when it
    /// exited instead (the port was taken meanwhile). A server that neither gets ready nor
    /// exits within [`START_TIMEOUT`] fails the test: another port would not help.
    async fn spawn(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--logfile", ""])
            .args(&self.args)
            // A master that feeds a replica writes an RDB file even with `--save ""`: keep it
            // out of the source tree.
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot run redis-server: {e} (scripts/setup installs Debian's redis-server)")
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Ready to accept connections") {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "redis-server on port {} was not ready within {START_TIMEOUT:?}",
                self.port
            )
        });
        if !ready {
            let _ = child.kill().await;
            return false;
        }
        // Keep draining its log so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        true
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A client for reading and writing what the crate stored.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis client")
    }

    /// Kills the server (like a crash) and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop().await;
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.spawn().await {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start again on port {}",
                self.port
            );
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open and nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undoes [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("a running server");
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // A paused server must be resumed to die promptly.
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-CONT", &pid.to_string()])
                    .status();
            }
            let _ = child.start_kill();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A Redis Cluster of three masters, no replicas, every slot covered.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let nodes = vec![
            RedisServer::start_node().await,
            RedisServer::start_node().await,
            RedisServer::start_node().await,
        ];
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Wait until every node agrees that the cluster is up.
        let deadline = Instant::now() + START_TIMEOUT;
        for node in &nodes {
            let mut connection = node
                .client()
                .get_multiplexed_async_connection()
                .await
                .expect("node connection");
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut connection)
                    .await
                    .expect("CLUSTER INFO");
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not form: {info}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        RedisCluster { nodes }
    }

    /// `redis://a,redis://b,redis://c`, what `redis_url` takes with `redis_cluster = true`.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}
