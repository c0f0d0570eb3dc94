//! Issue 13: the verified-token cache of the API guards stays within its bound under 100,000
//! distinct valid tokens. Every token is signed by the fake provider's RSA key (RS256, whose
//! check is cheap, so the test spends its time on the cache rather than on P-384), goes
//! through the guard and opens the route; the heap is measured by a counting allocator.
//!
//! Measured figures are printed (`cargo test --test bearer_cache_memory -- --nocapture`).

#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/heap.rs"]
mod heap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use fake_provider::{FakeProvider, Options};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rocket::figment::Figment;
use rocket::http::{Header, Status};
use rocket::local::asynchronous::Client;
use rocket::{get, routes};
use rocket_logto::testing::__cached_bearer_tokens as cached_bearer_tokens;
use rocket_logto::{BearerToken, Logto, Resource};
use serde_json::json;

const SHOPPING: &str = "https://shopping.example.com/api";
const TOKENS: usize = 100_000;
const BATCH: usize = 10_000;
/// The default `bearer_cache_entries`.
const CAPACITY: usize = 10_000;

struct Shopping;
impl Resource for Shopping {
    const INDICATOR: &'static str = SHOPPING;
}

#[get("/api/whoami")]
fn whoami(token: BearerToken<Shopping>) -> &'static str {
    if token.sub().is_empty() {
        "?"
    } else {
        "ok"
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `count` distinct valid tokens (numbered from `first`), signed on every core.
fn sign_batch(issuer: &str, kid: &str, first: usize, count: usize) -> Vec<String> {
    let key = RsaKeyPair::from_pkcs8(include_bytes!("support/keys/rsa-2048-a.pk8.der")).unwrap();
    let header =
        URL_SAFE_NO_PAD.encode(json!({ "alg": "RS256", "typ": "at+jwt", "kid": kid }).to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (key, header) = (&key, &header);
                scope.spawn(move || {
                    let rng = SystemRandom::new();
                    let mut signature = vec![0; key.public().modulus_len()];
                    let from = first + t * per;
                    let to = (from + per).min(first + count);
                    (from..to)
                        .map(|i| {
                            let claims = json!({
                                "iss": issuer, "aud": SHOPPING, "sub": format!("user-{i}"),
                                "client_id": "web-app", "scope": "shopping:read",
                                "iat": now, "exp": now + 3600, "jti": format!("jti-{i}"),
                            });
                            let signed =
                                format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
                            key.sign(&RSA_PKCS1_SHA256, &rng, signed.as_bytes(), &mut signature)
                                .unwrap();
                            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&signature))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

#[rocket::async_test]
async fn the_verified_token_cache_stays_within_its_bound_under_100k_distinct_tokens() {
    let fp = FakeProvider::start_with(Options {
        rsa: true,
        ..Options::default()
    })
    .await;
    let jwks = fp.jwks();
    let kid = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "RSA")
        .and_then(|k| k["kid"].as_str())
        .expect("an RSA key")
        .to_string();
    let logto = json!({ "endpoint": fp.endpoint, "resources": [SHOPPING] });
    let figment = Figment::from(rocket::Config::debug_default())
        .merge(("logto", logto))
        .merge(("log_level", "off"));
    let rocket = rocket::custom(figment)
        .attach(Logto::fairing())
        .register("/", Logto::catchers())
        .mount("/", routes![whoami]);
    let client = Client::untracked(rocket).await.unwrap();
    let before = heap::live();

    let mut after_batch = Vec::new();
    for batch in 0..TOKENS / BATCH {
        let tokens = sign_batch(&fp.issuer(), &kid, batch * BATCH, BATCH);
        for token in &tokens {
            let response = client
                .get("/api/whoami")
                .header(Header::new("Authorization", format!("Bearer {token}")))
                .dispatch()
                .await;
            assert_eq!(
                response.status(),
                Status::Ok,
                "token {batch}: {:?}",
                response.into_string().await
            );
        }
        drop(tokens);
        let cached = cached_bearer_tokens(client.rocket());
        assert!(
            cached <= CAPACITY,
            "{cached} tokens cached, more than {CAPACITY}"
        );
        after_batch.push((heap::live(), rss_kib()));
        eprintln!(
            "after {:>6} tokens: {cached} cached, heap {:.1} MiB, RSS {:.1} MiB",
            (batch + 1) * BATCH,
            after_batch[batch].0 as f64 / 1048576.0,
            after_batch[batch].1 as f64 / 1024.0
        );
    }
    assert_eq!(cached_bearer_tokens(client.rocket()), CAPACITY);
    // Full after the first batch: the next 90,000 tokens must not grow the heap beyond noise.
    let full = after_batch[0].0;
    let last = after_batch.last().unwrap().0;
    let peak = after_batch.iter().map(|(heap, _)| *heap).max().unwrap();
    eprintln!(
        "heap before: {:.1} MiB; with a full cache: {:.1} MiB (about {} bytes per cached token); after 100k tokens: {:.1} MiB; peak {:.1} MiB",
        before as f64 / 1048576.0,
        full as f64 / 1048576.0,
        (full - before) / CAPACITY as i64,
        last as f64 / 1048576.0,
        peak as f64 / 1048576.0
    );
    assert!(
        peak - full < 2 * 1024 * 1024,
        "the heap grew by {} bytes after the cache was full",
        peak - full
    );
}
