//! App instances in processes of their own, like the replicas of a deployment: the test
//! binary runs itself again with only its entry test selected (`--exact <name>`) and the
//! instance's settings in the environment; that test serves the app of `app.rs` on a free
//! loopback port and prints the port. Every instance shares the test `SECRET_KEY`.
//!
//! ```ignore
//! #[test]
//! fn instance_process() {
//!     instances::serve_if_instance(); // does nothing in a normal test run
//! }
//!
//! let a = Instance::spawn("a", &logto_table, "instance_process").await;
//! ```
#![allow(dead_code)]

use std::io::Read;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use rocket::fairing::AdHoc;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// Set in an instance's environment: its name and `logto` table, as JSON.
pub const INSTANCE_ENV: &str = "ROCKET_LOGTO_TEST_INSTANCE";
const READY: &str = "ROCKET_LOGTO_INSTANCE_READY ";
/// The longest an instance may take to print its READY line: the wait ends at the line,
/// so this ceiling only matters when the instance is broken, not when a shared runner is
/// busy (a test binary starting Rocket under load takes seconds).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running instance. Dropping it kills the process (which also exits by itself when
/// this test process dies, because its stdin closes).
pub struct Instance {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    _stdin: ChildStdin,
}

impl Instance {
    /// Starts an instance named `name` with this `logto` table, through the entry test
    /// `entry` of the current test binary.
    pub async fn spawn(name: &str, logto: &Value, entry: &str) -> Instance {
        let exe = std::env::current_exe().expect("the test binary");
        let settings = json!({ "name": name, "logto": logto }).to_string();
        let mut child = Command::new(exe)
            .args(["--exact", entry, "--nocapture", "--test-threads", "1"])
            .env(INSTANCE_ENV, settings)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("run the test binary as an instance");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = match tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(port) = line.trim().strip_prefix(READY) {
                    return port.parse::<u16>().ok();
                }
            }
            None
        })
        .await
        {
            Ok(Some(port)) => port,
            Ok(None) => panic!("instance {name} exited before it was ready (see its output above)"),
            Err(_) => panic!("instance {name} printed no READY line within {START_TIMEOUT:?}"),
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Instance {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            _stdin: stdin,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the process at once (SIGKILL), as a crash would, and waits until it is gone.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}

/// The instance side: when this process was started by [`Instance::spawn`], serves the
/// test app until the parent goes away, then exits; otherwise returns at once.
pub fn serve_if_instance() {
    let Ok(settings) = std::env::var(INSTANCE_ENV) else {
        return;
    };
    let settings: Value = serde_json::from_str(&settings).expect("instance settings");
    let name = settings["name"].as_str().unwrap_or("?").to_string();
    let logto = settings["logto"].clone();
    // The parent holds our stdin: when it closes, the test run is over.
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        loop {
            match std::io::stdin().read(&mut buf) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {}
            }
        }
    });
    let rocket = crate::app::rocket_with(logto, crate::app::SECRET_KEY);
    let log_level = if std::env::var_os("LOGTO_TEST_INSTANCE_LOG").is_some() {
        "normal"
    } else {
        "off"
    };
    let figment = rocket
        .figment()
        .clone()
        .merge(("address", "127.0.0.1"))
        .merge(("port", 0))
        .merge(("log_level", log_level));
    let header = name.clone();
    let rocket = rocket
        .configure(figment)
        .attach(AdHoc::on_liftoff("ready line", |rocket| {
            Box::pin(async move {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{READY}{}", rocket.config().port);
                let _ = out.flush();
            })
        }))
        .attach(AdHoc::on_response("instance name", move |_, response| {
            let header = header.clone();
            Box::pin(async move {
                response.set_raw_header("X-Instance", header);
            })
        }));
    let _ = rocket::execute(rocket.launch());
    std::process::exit(0);
}
