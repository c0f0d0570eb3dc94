//! A deployment as users run one: instance processes of the test app (`instances.rs`, one
//! `secret_key`) behind a round-robin front, the real Logto-like provider and a real
//! `redis-server`; and a browser's cookie jar to drive it. Shared by the Redis tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::instances::Instance;
use crate::real_provider::{ProviderBrowser, ProviderOptions, RealProvider};
use crate::redis_server::RedisServer;
use crate::round_robin::RoundRobin;

/// The longest a change (a sign-out, a refresh, a Redis restart) may take to reach every
/// instance before a test fails. The waits poll and end as soon as every instance agrees,
/// so this is a ceiling for a broken deployment on a busy shared runner, not a bound the
/// crate promises (the one it does promise, a back-channel logout everywhere within 1 s, is
/// asserted as such).
pub const SETTLE: Duration = Duration::from_secs(60);

pub struct Deployment {
    pub provider: RealProvider,
    pub redis: RedisServer,
    pub front: RoundRobin,
    pub instances: Vec<Instance>,
    /// One connection per request (no keep-alive pool): the front deals requests round robin.
    pub http: reqwest::Client,
    /// The `logto` table of the instances.
    pub logto: Value,
}

/// Provider, Redis, `count` instances (`entry`: the test that serves an instance) and the
/// front. The instances' `logto` table is the provider's app, `base_url` the front, then
/// what `settings` gives (it may name the Redis server).
pub async fn deploy(
    count: usize,
    entry: &str,
    settings: impl FnOnce(&RedisServer) -> Value,
) -> Deployment {
    let front = RoundRobin::bind().await;
    let provider = RealProvider::start(ProviderOptions {
        redirect_uris: vec![format!("{}/logto/sign-in-callback", front.url())],
        post_logout_redirect_uris: vec![format!("{}/", front.url())],
        ..ProviderOptions::default()
    })
    .await;
    let redis = RedisServer::start().await;
    let mut logto = crate::app::logto_table(
        &provider.endpoint,
        &provider.options.app_id,
        &provider.options.app_secret,
    );
    crate::app::merge(&mut logto, &json!({ "base_url": front.url() }));
    crate::app::merge(&mut logto, &settings(&redis));
    let names = ["a", "b", "c", "d"];
    let instances = rocket::futures::future::join_all(
        names[..count]
            .iter()
            .map(|name| Instance::spawn(name, &logto, entry)),
    )
    .await;
    front.set_backends(instances.iter().map(|i| i.addr).collect());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        // A ceiling for one request, which only a broken instance reaches.
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    Deployment {
        provider,
        redis,
        front,
        instances,
        http,
        logto,
    }
}

/// What a browser keeps for the app: `name=value` as set.
#[derive(Clone, Default, Debug)]
pub struct Jar(pub BTreeMap<String, String>);

impl Jar {
    pub fn absorb(&mut self, headers: &reqwest::header::HeaderMap) {
        for line in headers.get_all("set-cookie") {
            let line = line.to_str().unwrap();
            let pair = line.split(';').next().unwrap().trim();
            let (name, value) = pair.split_once('=').unwrap();
            let lower = line.to_ascii_lowercase();
            if value.is_empty() || lower.contains("max-age=0") {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_string(), pair.to_string());
            }
        }
    }

    pub fn header(&self) -> String {
        self.0.values().cloned().collect::<Vec<_>>().join("; ")
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// One answer: status, the instance that made it, `Retry-After`, body as JSON (or text).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub instance: String,
    pub retry_after: Option<String>,
    pub location: Option<String>,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
}

impl Deployment {
    pub async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        jar: &Jar,
        accept: &str,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, url)
            .header("Accept", accept)
            .header("User-Agent", "rocket_logto-test/1.0");
        if !jar.0.is_empty() {
            request = request.header("Cookie", jar.header());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
        Answer {
            status,
            instance: header("x-instance").unwrap_or_default(),
            retry_after: header("retry-after"),
            location: header("location"),
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        }
    }

    pub async fn get(&self, url: &str, jar: &Jar) -> Answer {
        self.request(reqwest::Method::GET, url, jar, "application/json")
            .await
    }

    /// Through the front, keeping the cookies the answer sets.
    pub async fn browse(&self, path: &str, jar: &mut Jar) -> Answer {
        let answer = self.get(&format!("{}{path}", self.front.url()), jar).await;
        jar.absorb(&answer.headers);
        answer
    }

    /// To one instance directly, without keeping cookies.
    pub async fn on(&self, instance: usize, path: &str, jar: &Jar) -> Answer {
        self.get(&format!("{}{path}", self.instances[instance].url()), jar)
            .await
    }

    pub async fn post_on(&self, instance: usize, path: &str, jar: &Jar) -> Answer {
        let url = format!("{}{path}", self.instances[instance].url());
        self.request(reqwest::Method::POST, &url, jar, "application/json")
            .await
    }

    /// Signs `user` in through the front, starting with `jar` as it is: the instance of the
    /// start, and the callback's answer (a 303).
    pub async fn sign_in_as(&self, user: (&str, &str), jar: &mut Jar) -> (String, Answer) {
        let start = self.browse("/logto/sign-in", jar).await;
        assert_eq!(start.status, StatusCode::SEE_OTHER, "{start:?}");
        let authorize = start.location.clone().unwrap();
        let callback = ProviderBrowser::new()
            .sign_in(&authorize, user.0, user.1)
            .await;
        let path = callback
            .strip_prefix(&self.front.url())
            .unwrap_or_else(|| panic!("the callback is not on the front: {callback}"))
            .to_string();
        let done = self.browse(&path, jar).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{done:?}");
        (start.instance, done)
    }

    /// A connection of the test's own to the deployment's Redis.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.redis
            .client()
            .get_multiplexed_async_connection()
            .await
            .expect("a Redis connection")
    }

    /// The session keys in Redis (the Redis session store's).
    pub async fn session_keys(&self) -> Vec<String> {
        let mut connection = self.redis().await;
        redis::cmd("KEYS")
            .arg("rocket_logto:ses:*")
            .query_async(&mut connection)
            .await
            .unwrap()
    }

    pub async fn refreshes(&self) -> u64 {
        self.provider.stats().await["token_requests"]["refresh_token"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Polls `path` with `jar` on every instance until each answers `status` (none may
    /// answer 500 meanwhile); the time it took, or a panic at `deadline`.
    pub async fn until_all(
        &self,
        path: &str,
        jar: &Jar,
        status: StatusCode,
        deadline: Duration,
    ) -> Duration {
        let started = Instant::now();
        let mut pending: BTreeSet<usize> = (0..self.instances.len()).collect();
        loop {
            for i in pending.clone() {
                let answer = self.on(i, path, jar).await;
                assert_ne!(
                    answer.status,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "{answer:?}"
                );
                if answer.status == status {
                    pending.remove(&i);
                }
            }
            if pending.is_empty() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < deadline,
                "instances {pending:?} still do not answer {status} to {path} after {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
