//! Liveness and readiness routes for load balancers and Kubernetes probes
//! ([`Logto::health_routes`](crate::Logto::health_routes)): `GET live` answers 200 whenever
//! the process serves; `GET ready` answers 200 only when what a request may need is there
//! (Logto's discovery and keys, and with `redis_url` Redis and its subscription), else 503
//! naming each check and its state. Nothing secret: states are fixed words.

use std::time::Duration;

use rocket::http::{ContentType, Header, Status};
use rocket::response::{self, Responder, Response};
use rocket::{get, Request, Route, State};

use crate::oidc::discovery::Readiness;
use crate::util::log_limit::{limited, LogLimit};
use crate::web::state::LogtoState;

/// Longest a readiness probe waits for a discovery fetch it started: probes time out
/// after a second by default (Kubernetes' `timeoutSeconds`); the fetch goes on and the
/// next probe sees its outcome.
const DISCOVERY_WAIT: Duration = Duration::from_millis(500);

/// The log lines of failed readiness probes.
static NOT_READY: LogLimit = LogLimit::new("readiness");

/// The routes, for [`Logto::health_routes`](crate::Logto::health_routes).
pub(crate) fn routes() -> Vec<Route> {
    rocket::routes![live, ready]
}

/// A probe's answer: its status and a small JSON body, never cached.
struct Probe {
    status: Status,
    body: String,
}

impl<'r> Responder<'r, 'static> for Probe {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        Response::build()
            .status(self.status)
            .header(ContentType::JSON)
            .header(Header::new("Cache-Control", "no-store"))
            .sized_body(self.body.len(), std::io::Cursor::new(self.body))
            .ok()
    }
}

#[get("/live")]
fn live() -> Probe {
    Probe {
        status: Status::Ok,
        body: r#"{"status":"live"}"#.into(),
    }
}

#[get("/ready")]
async fn ready(state: Option<&State<LogtoState>>) -> Probe {
    let Some(state) = state else {
        return answer(&[("logto", "not_attached")]);
    };
    let mut checks: Vec<(&'static str, &'static str)> = Vec::with_capacity(4);
    let (discovery, jwks) = match state.provider.readiness(DISCOVERY_WAIT).await {
        Readiness::Loaded { fresh: true, keys } => ("ok", if keys > 0 { "ok" } else { "empty" }),
        Readiness::Loaded { fresh: false, keys } => {
            ("stale", if keys > 0 { "ok" } else { "empty" })
        }
        Readiness::Failed => ("unreachable", "not_loaded"),
        Readiness::Pending => ("loading", "not_loaded"),
    };
    checks.push(("discovery", discovery));
    checks.push(("jwks", jwks));
    if let Some((answers, subscribed)) = state.store.redis_health().await {
        checks.push(("redis", if answers { "ok" } else { "down" }));
        checks.push(("redis_subscription", if subscribed { "ok" } else { "down" }));
    }
    answer(&checks)
}

/// 200 when every check is `ok`, else 503; the body names each check and its state.
fn answer(checks: &[(&'static str, &'static str)]) -> Probe {
    let ok = checks.iter().all(|(_, state)| *state == "ok");
    let checks: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(name, state)| (name.to_string(), serde_json::Value::from(*state)))
        .collect();
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "not_ready" },
        "checks": checks,
    });
    if !ok {
        // Probes come every few seconds, and anyone who reaches the route may call it.
        limited!(
            NOT_READY,
            warn,
            "logto: event=readiness outcome=not_ready checks={}",
            body["checks"]
        );
    }
    Probe {
        status: if ok {
            Status::Ok
        } else {
            Status::ServiceUnavailable
        },
        body: body.to_string(),
    }
}
