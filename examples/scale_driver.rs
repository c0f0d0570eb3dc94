//! The scale harness's own parts (`bench/scale`): the round-robin front and the load driver.
//! Not an example to copy.
//!
//! ```text
//! scale_driver front --port P --backends PORT,PORT,...   # TCP round robin, one backend per connection
//! scale_driver load  --front URL --users N --duration S [--concurrency C]
//!                    [--mix me=80,token=10,org=5,signout=5] --backends URL,URL,... [--out FILE]
//! ```
//!
//! `front` hands each new connection to the next backend that accepts it (a backend that
//! refuses is skipped, as a load balancer's health check would): the driver opens one
//! connection per request, so requests go round robin over the instances.
//!
//! `load` signs `--users` users in through the real flow (the app's `/logto/sign-in`, the
//! provider's login form as `load1`..`loadN`, the callback), then for `--duration` seconds
//! runs `--concurrency` browsers, each taking a random user per request (one request of a
//! user at a time) and a page kind by the `--mix` weights:
//! `me` (`/me`, `AuthenticatedUser`), `token` (`/shopping`, `ResourceToken<Shopping>`), `org`
//! (`/orgs`, the user's organization tokens) and `signout` (`/logto/sign-out`, then the
//! old cookies must be refused by every instance, each asked directly at its `--backends` URL,
//! within 1 s, then a new sign-in). It writes one JSON summary (`--out`):
//! per kind the count, statuses, p50/p99; 5xx and 503 counts with the first and last second
//! they occurred; transport errors; users signed out who did not sign out (a 401 on a session
//! the driver did not end); access tokens seen (distinct, per target).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

#[path = "../tests/support/real_provider.rs"]
#[allow(unused_imports)]
mod real_provider;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn die(msg: &str) -> ! {
    eprintln!("scale_driver: {msg}");
    std::process::exit(2)
}

fn num<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match arg(args, name) {
        Some(v) => v
            .parse()
            .unwrap_or_else(|_| die(&format!("{name}: not a number: {v}"))),
        None => default,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("front") => front(&args).await,
        Some("load") => load(&args).await,
        _ => die("usage: scale_driver front|load (see the file's header)"),
    }
}

async fn front(args: &[String]) {
    let port: u16 = num(args, "--port", 0);
    let backends: Vec<u16> = arg(args, "--backends")
        .unwrap_or_else(|| die("--backends"))
        .split(',')
        .map(|p| p.parse().unwrap_or_else(|_| die("--backends: ports")))
        .collect();
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| die(&format!("bind {port}: {e}")));
    println!("FRONT_READY {}", listener.local_addr().unwrap().port());
    let next = Arc::new(AtomicUsize::new(0));
    while let Ok((mut inbound, _)) = listener.accept().await {
        let (backends, next) = (backends.clone(), next.clone());
        tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            for _ in 0..backends.len() {
                let i = next.fetch_add(1, Ordering::Relaxed) % backends.len();
                if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", backends[i])).await {
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    return;
                }
            }
        });
    }
}

/// What a browser keeps for the app.
#[derive(Clone, Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn absorb(&mut self, headers: &reqwest::header::HeaderMap) {
        for line in headers.get_all("set-cookie") {
            let Ok(line) = line.to_str() else { continue };
            let pair = line.split(';').next().unwrap_or("").trim();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if value.is_empty() || line.to_ascii_lowercase().contains("max-age=0") {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_string(), pair.to_string());
            }
        }
    }

    fn header(&self) -> String {
        self.0.values().cloned().collect::<Vec<_>>().join("; ")
    }
}

struct User {
    name: String,
    jar: Jar,
    /// False after a sign-in or a sign-out that did not complete (an instance killed under
    /// it): the next step signs in again, and a 401 meanwhile is not a lost session.
    signed_in: bool,
    /// The last steps (second, kind, status, cookies set), shown for a lost session.
    history: Vec<(u64, &'static str, u16, String)>,
}

impl User {
    fn note(&mut self, second: u64, kind: &'static str, status: u16, set: String) {
        if self.history.len() == 6 {
            self.history.remove(0);
        }
        self.history.push((second, kind, status, set));
    }
}

#[derive(Default)]
struct Kind {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
}

#[derive(Default)]
struct Tally {
    kinds: BTreeMap<&'static str, Kind>,
    /// Seconds since the start of the load with a 5xx (other than 503), a 503, a transport error.
    s5xx: Vec<u64>,
    s503: Vec<u64>,
    errors: Vec<(u64, String)>,
    /// 401s on sessions the driver did not end: second, user, their last steps.
    lost: Vec<(u64, String, String)>,
    /// Sign-outs whose old cookies were still served by some instance 1 s afterwards.
    signout_served: u64,
    /// Of those: the second of the sign-out and what the old cookies got, in order
    /// (`401×2 503×7`; 0 is a transport error), to tell an answer from an outage.
    signout_served_examples: Vec<(u64, String)>,
    /// Their old cookies, asked again once the load is over (a fault long past).
    signout_served_jars: Vec<(u64, Jar)>,
    /// The longest a sign-out took to be refused by every instance.
    signout_propagation_max_us: u64,
    tokens: BTreeMap<String, BTreeSet<String>>,
}

struct Ctx {
    front: String,
    /// Each instance's own URL, to ask every one of them, not whichever the front picks.
    backends: Vec<String>,
    http: reqwest::Client,
    tally: Mutex<Tally>,
    started: Instant,
}

impl Ctx {
    async fn get(
        &self,
        path: &str,
        jar: &Jar,
    ) -> Result<(u16, reqwest::header::HeaderMap, String), String> {
        self.get_on(&self.front, path, jar).await
    }

    /// A GET to `base` (the front, or one instance directly).
    async fn get_on(
        &self,
        base: &str,
        path: &str,
        jar: &Jar,
    ) -> Result<(u16, reqwest::header::HeaderMap, String), String> {
        let response = self
            .http
            .get(format!("{base}{path}"))
            .header("Accept", "application/json")
            .header("Cookie", jar.header())
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .map_err(|e| format!("GET {path}: body: {e}"))?;
        Ok((status, headers, body))
    }

    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn record(&self, kind: &'static str, took: Duration, status: u16) {
        let mut t = self.tally.lock().unwrap();
        let k = t.kinds.entry(kind).or_default();
        k.latencies_us.push(took.as_micros() as u64);
        *k.statuses.entry(status).or_default() += 1;
        let s = self.second();
        if status == 503 {
            t.s503.push(s);
        } else if status >= 500 {
            t.s5xx.push(s);
        }
    }

    /// The full sign-in of `user` through the front and the provider's login form.
    async fn sign_in(&self, user: &mut User) -> Result<(), String> {
        let started = Instant::now();
        user.jar = Jar::default();
        user.signed_in = false;
        let (status, headers, _) = self.get("/logto/sign-in", &user.jar).await?;
        if status != 303 {
            return Err(format!("GET /logto/sign-in: {status}"));
        }
        user.jar.absorb(&headers);
        let authorize = headers
            .get("location")
            .and_then(|l| l.to_str().ok())
            .ok_or("no Location")?
            .to_string();
        let callback = real_provider::ProviderBrowser::new()
            .try_sign_in(&authorize, &user.name, "load-password")
            .await?;
        let path = callback
            .strip_prefix(&self.front)
            .ok_or_else(|| format!("the callback is not on the front: {callback}"))?
            .to_string();
        let (status, headers, _) = self.get(&path, &user.jar).await?;
        self.record("signin", started.elapsed(), status);
        user.note(self.second(), "signin", status, cookies_set(&headers));
        if status != 303 {
            return Err(format!("callback: {status}"));
        }
        user.jar.absorb(&headers);
        user.signed_in = true;
        Ok(())
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn load(args: &[String]) {
    let front = arg(args, "--front").unwrap_or_else(|| die("--front"));
    let users_n: usize = num(args, "--users", 2000);
    let duration = Duration::from_secs_f64(num(args, "--duration", 60.0));
    let concurrency: usize = num(args, "--concurrency", 64);
    let backends: Vec<String> = arg(args, "--backends")
        .unwrap_or_else(|| die("--backends URL,URL,... (each instance's own URL)"))
        .split(',')
        .map(|b| b.trim_end_matches('/').to_string())
        .collect();
    let mix_arg = arg(args, "--mix").unwrap_or_else(|| "me=80,token=10,org=5,signout=5".into());
    let out = arg(args, "--out");
    let mut mix: Vec<(&'static str, u32)> = Vec::new();
    for part in mix_arg.split(',') {
        let (name, weight) = part
            .split_once('=')
            .unwrap_or_else(|| die("--mix: name=weight,..."));
        let kind = match name {
            "me" => "me",
            "token" => "token",
            "org" => "org",
            "signout" => "signout",
            _ => die(&format!(
                "--mix: unknown page kind {name} (me, token, org, signout)"
            )),
        };
        mix.push((
            kind,
            weight
                .parse()
                .unwrap_or_else(|_| die("--mix: weights are numbers")),
        ));
    }
    let total_weight: u32 = mix.iter().map(|m| m.1).sum();
    if total_weight == 0 {
        die("--mix: all weights are 0");
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // One connection per request: the front deals requests round robin.
        .pool_max_idle_per_host(0)
        // A ceiling that only a hung instance reaches (the crate bounds its own waits).
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let ctx = Arc::new(Ctx {
        front,
        backends: backends.clone(),
        http,
        tally: Mutex::default(),
        started: Instant::now(),
    });

    // Sign everyone in, `concurrency` at a time.
    let signin_started = Instant::now();
    let users: Vec<Arc<tokio::sync::Mutex<User>>> = (1..=users_n)
        .map(|i| {
            Arc::new(tokio::sync::Mutex::new(User {
                name: format!("load{i}"),
                jar: Jar::default(),
                signed_in: false,
                history: Vec::new(),
            }))
        })
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let workers = (0..concurrency.min(users_n).max(1)).map(|_| {
        let (ctx, users, next) = (ctx.clone(), users.clone(), next.clone());
        tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(user) = users.get(i) else { return };
                let mut user = user.lock().await;
                if let Err(e) = ctx.sign_in(&mut user).await {
                    die(&format!("sign-in of {} failed: {e}", user.name));
                }
            }
        })
    });
    for w in futures_join(workers.collect()).await {
        w.unwrap();
    }
    let signin_secs = signin_started.elapsed().as_secs_f64();
    eprintln!("scale_driver: {users_n} users signed in in {signin_secs:.1} s");
    println!("LOAD_STARTED");

    // The load.
    let load_ctx = Arc::new(Ctx {
        front: ctx.front.clone(),
        backends: backends.clone(),
        http: ctx.http.clone(),
        tally: Mutex::default(),
        started: Instant::now(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));
    let workers = (0..concurrency).map(|_| {
        let (ctx, users, stop, requests, mix) = (
            load_ctx.clone(),
            users.clone(),
            stop.clone(),
            requests.clone(),
            mix.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (user_i, mut pick) = {
                    let mut rng = rand::thread_rng();
                    (
                        rng.gen_range(0..users.len()),
                        rng.gen_range(0..total_weight),
                    )
                };
                let mut kind = mix[0].0;
                for (k, w) in &mix {
                    if pick < *w {
                        kind = k;
                        break;
                    }
                    pick -= w;
                }
                let Ok(mut user) = users[user_i].try_lock() else {
                    // Another browser has this user. Wait a little rather than spin: with
                    // fewer users than browsers, spinning workers would starve the tasks
                    // that hold the users (a 6 s run once hung for 30 minutes).
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                requests.fetch_add(1, Ordering::Relaxed);
                browse(&ctx, &mut user, kind).await;
            }
        })
    });
    let workers: Vec<_> = workers.collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for w in futures_join(workers).await {
        w.unwrap();
    }
    let elapsed = load_ctx.started.elapsed().as_secs_f64();
    let tally = std::mem::take(&mut *load_ctx.tally.lock().unwrap());
    // The old cookies some instance still served 1 s after their sign-out, asked again now
    // that the load (and any fault) is over: each instance directly. One still served means
    // the sign-out never took effect, not that it was late.
    let mut served_after = Vec::new();
    for (second, jar) in &tally.signout_served_jars {
        let mut answers = Vec::new();
        for backend in &backends {
            answers.push(match load_ctx.get_on(backend, "/me", jar).await {
                Ok((status, _, _)) => status,
                Err(_) => 0,
            });
        }
        if answers.contains(&200) {
            served_after.push(format!("signed out at {second}s, now {answers:?}"));
        }
    }
    let sign_in_tally = std::mem::take(&mut *ctx.tally.lock().unwrap());
    let mut kinds = serde_json::Map::new();
    let mut total = 0u64;
    for (name, kind) in tally.kinds.iter().chain(
        sign_in_tally
            .kinds
            .iter()
            .filter(|(n, _)| **n == "signin")
            .map(|(_, k)| (&"initial_signin", k)),
    ) {
        let mut sorted = kind.latencies_us.clone();
        sorted.sort_unstable();
        if *name != "initial_signin" {
            total += sorted.len() as u64;
        }
        kinds.insert(
            name.to_string(),
            json!({
                "count": sorted.len(),
                "statuses": kind.statuses,
                "p50_ms": percentile(&sorted, 0.5),
                "p99_ms": percentile(&sorted, 0.99),
                "max_ms": percentile(&sorted, 1.0),
            }),
        );
    }
    let window = |v: &[u64]| -> Value {
        match (v.iter().min(), v.iter().max()) {
            (Some(a), Some(b)) => json!([a, b]),
            _ => Value::Null,
        }
    };
    let summary = json!({
        "users": users_n,
        "signin_seconds": signin_secs,
        "duration_s": elapsed,
        "concurrency": concurrency,
        "mix": mix_arg,
        "requests": total,
        "requests_per_s": total as f64 / elapsed,
        "kinds": kinds,
        "status_5xx_not_503": tally.s5xx.len(),
        "status_5xx_not_503_seconds": window(&tally.s5xx),
        "status_503": tally.s503.len(),
        "status_503_seconds": window(&tally.s503),
        "transport_errors": tally.errors.len(),
        "transport_error_seconds": window(&tally.errors.iter().map(|e| e.0).collect::<Vec<_>>()),
        "transport_error_examples": tally.errors.iter().take(3).map(|e| e.1.clone()).collect::<Vec<_>>(),
        "users_signed_out_unasked": tally.lost.len(),
        "users_signed_out_unasked_examples": tally.lost.iter().take(5).map(|l| format!("{}s {}: {}", l.0, l.1, l.2)).collect::<Vec<_>>(),
        "signed_out_cookies_still_served": tally.signout_served,
        "signed_out_cookies_still_served_seconds": window(&tally.signout_served_examples.iter().map(|e| e.0).collect::<Vec<_>>()),
        "signed_out_cookies_still_served_examples": tally.signout_served_examples.iter().take(5).map(|e| format!("{}s: {}", e.0, e.1)).collect::<Vec<_>>(),
        "signed_out_cookies_served_after_the_load": served_after.len(),
        "signed_out_cookies_served_after_the_load_examples": served_after.iter().take(5).collect::<Vec<_>>(),
        "signout_propagation_max_ms": tally.signout_propagation_max_us as f64 / 1000.0,
        "distinct_access_tokens": tally.tokens.iter().map(|(k, v)| (k.clone(), v.len())).collect::<BTreeMap<_, _>>(),
    });
    let text = serde_json::to_string_pretty(&summary).unwrap();
    match out {
        Some(path) => std::fs::write(&path, &text).unwrap_or_else(|e| die(&format!("{path}: {e}"))),
        None => println!("{text}"),
    }
}

async fn futures_join<T>(
    handles: Vec<tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await);
    }
    out
}

/// The names of the cookies an answer sets (`-name` for one it deletes), for the history.
fn cookies_set(headers: &reqwest::header::HeaderMap) -> String {
    let names: Vec<String> = headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|line| {
            let name = line.split('=').next().unwrap_or("").trim();
            let lower = line.to_ascii_lowercase();
            let deleted = line.split(';').next().is_some_and(|p| p.ends_with('='))
                || lower.contains("max-age=0");
            if deleted {
                format!("-{name}")
            } else {
                name.to_string()
            }
        })
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(" [{}]", names.join(" "))
    }
}

/// One step of one user.
async fn browse(ctx: &Ctx, user: &mut User, kind: &'static str) {
    if !user.signed_in {
        if let Err(e) = ctx.sign_in(user).await {
            ctx.tally
                .lock()
                .unwrap()
                .errors
                .push((ctx.second(), format!("sign-in: {e}")));
        }
        return;
    }
    let path = match kind {
        "me" => "/me",
        "token" => "/shopping",
        "org" => "/orgs",
        _ => "/logto/sign-out",
    };
    let started = Instant::now();
    let answer = ctx.get(path, &user.jar).await;
    let took = started.elapsed();
    let (status, headers, body) = match answer {
        Ok(a) => a,
        Err(e) => {
            ctx.tally.lock().unwrap().errors.push((ctx.second(), e));
            user.note(ctx.second(), kind, 0, String::new());
            if kind == "signout" {
                // It may have ended the session or not: start over.
                user.signed_in = false;
            }
            return;
        }
    };
    ctx.record(kind, took, status);
    user.note(ctx.second(), kind, status, cookies_set(&headers));
    if kind == "signout" {
        let old = user.jar.clone();
        user.jar.absorb(&headers);
        if status == 303 {
            // The old cookies (a copy kept elsewhere) must be refused by every instance, each
            // asked directly, within a second (the bound SECURITY.md sets for a sign-out to
            // reach every instance). Refused: anything but a 2xx (401; 503 from an instance
            // that cannot tell; no answer from a dead one).
            let signed_out = Instant::now();
            let mut serving: Vec<&str> = ctx.backends.iter().map(String::as_str).collect();
            let mut answers: Vec<(u16, u32)> = Vec::new();
            loop {
                let mut still = Vec::new();
                for backend in serving {
                    let status = match ctx.get_on(backend, "/me", &old).await {
                        Ok((status, _, _)) => status,
                        Err(_) => 0,
                    };
                    match answers.last_mut() {
                        Some((s, n)) if *s == status => *n += 1,
                        _ => answers.push((status, 1)),
                    }
                    if (200..300).contains(&status) {
                        still.push(backend);
                    }
                }
                serving = still;
                if serving.is_empty() {
                    break;
                }
                if signed_out.elapsed() > Duration::from_secs(1) {
                    let answers = answers
                        .iter()
                        .map(|(s, n)| format!("{s}×{n}"))
                        .collect::<Vec<_>>()
                        .join(" ");
                    let mut t = ctx.tally.lock().unwrap();
                    t.signout_served += 1;
                    t.signout_served_examples.push((ctx.second(), answers));
                    t.signout_served_jars.push((ctx.second(), old.clone()));
                    break;
                }
                // The instances still serving them are asked again shortly.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let took = signed_out.elapsed().as_micros() as u64;
            let mut t = ctx.tally.lock().unwrap();
            t.signout_propagation_max_us = t.signout_propagation_max_us.max(took);
        }
        if let Err(e) = ctx.sign_in(user).await {
            ctx.tally
                .lock()
                .unwrap()
                .errors
                .push((ctx.second(), format!("sign-in: {e}")));
        }
        return;
    }
    user.jar.absorb(&headers);
    if status == 401 {
        let history = user
            .history
            .iter()
            .map(|(s, k, c, set)| format!("{s}s {k} {c}{set}"))
            .collect::<Vec<_>>()
            .join(", ");
        ctx.tally
            .lock()
            .unwrap()
            .lost
            .push((ctx.second(), user.name.clone(), history));
        if let Err(e) = ctx.sign_in(user).await {
            ctx.tally
                .lock()
                .unwrap()
                .errors
                .push((ctx.second(), format!("sign-in: {e}")));
        }
        return;
    }
    if status == 200 && kind != "me" {
        if let Ok(v) = serde_json::from_str::<Value>(&body) {
            let mut t = ctx.tally.lock().unwrap();
            if kind == "token" {
                if let Some(tok) = v["access_token"].as_str() {
                    t.tokens
                        .entry("shopping".into())
                        .or_default()
                        .insert(tok.to_string());
                }
            } else if let Some(map) = v.as_object() {
                for (org, token) in map {
                    if let Some(tok) = token["access_token"].as_str() {
                        t.tokens
                            .entry(format!("org:{org}"))
                            .or_default()
                            .insert(tok.to_string());
                    }
                }
            }
        }
    }
}
