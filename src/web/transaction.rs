//! Sign-in transactions: the `state`, `nonce`, PKCE verifier and return path of one
//! sign-in in flight, kept in a private cookie named after its `state` so that several
//! tabs can sign in at once, and spent exactly once.

use std::time::Duration;

use rocket::http::{Cookie, CookieJar, SameSite};
use serde::{Deserialize, Serialize};

use crate::config::LogtoConfig;
use crate::return_path::ReturnPath;
use crate::session::{self, CookieNames};
use crate::util::bounded::ExpiringMap;
use crate::util::clock::now;

/// A transaction older than this is refused.
pub(crate) const TRANSACTION_TTL_SECS: i64 = 600;
/// Sign-ins in flight per browser; starting one more drops all the others (a browser
/// with that many unfinished sign-ins is more likely looping than signing in in 7 tabs).
const MAX_IN_FLIGHT: usize = 6;

/// One sign-in in flight. No `Debug`: it holds the PKCE verifier.
#[derive(Serialize, Deserialize)]
pub(crate) struct Transaction {
    #[serde(rename = "s")]
    pub state: String,
    #[serde(rename = "n")]
    pub nonce: String,
    #[serde(rename = "v")]
    pub pkce_verifier: String,
    #[serde(rename = "r")]
    pub return_to: ReturnPath,
    #[serde(rename = "c")]
    pub created_at: i64,
    /// The `max_age` the sign-in asked for: the callback checks `auth_time` against it.
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
}

/// The cookie name for a `state`: a prefix of it, so the name alone reveals nothing usable.
pub(crate) fn cookie_name(state: &str, names: &CookieNames) -> Option<String> {
    let key: String = state.chars().take(16).collect();
    if key.len() < 16
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return None;
    }
    Some(format!("{}{key}", names.transaction_prefix))
}

/// Stores a new transaction. A browser already holding `MAX_IN_FLIGHT` unfinished
/// sign-ins loses all of them (not just the oldest): cookies carry no age the server
/// can read without decrypting each, and a browser that far behind is stuck anyway.
pub(crate) fn store(jar: &CookieJar<'_>, tx: &Transaction, config: &LogtoConfig) {
    let names = CookieNames::of(config);
    let in_flight: Vec<String> = jar
        .iter()
        .map(|c| c.name().to_string())
        .filter(|n| n.starts_with(names.transaction_prefix))
        .collect();
    if in_flight.len() >= MAX_IN_FLIGHT {
        for name in in_flight {
            jar.remove(session::removal(&name, config));
        }
    }
    let name = cookie_name(&tx.state, names).expect("generated states are long enough");
    let value = serde_json::to_string(tx).expect("a transaction always serializes");
    jar.add_private(
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(config.secure_cookies())
            .max_age(time::Duration::seconds(TRANSACTION_TTL_SECS))
            .build(),
    );
}

/// Why no transaction could be taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TakeError {
    Missing,
    Expired,
    Replayed,
}

/// Takes the transaction of `state` out of the jar: the cookie is removed whatever the
/// outcome, and the `state` is remembered as spent so a replayed callback fails even if
/// the browser still holds the cookie.
pub(crate) fn take(
    jar: &CookieJar<'_>,
    state: &str,
    spent: &SpentStates,
    config: &LogtoConfig,
) -> Result<Transaction, TakeError> {
    let name = cookie_name(state, CookieNames::of(config)).ok_or(TakeError::Missing)?;
    if jar.get(&name).is_none() {
        return Err(TakeError::Missing);
    }
    let cookie = jar.get_private(&name);
    jar.remove(session::removal(&name, config));
    let tx: Transaction = cookie
        .and_then(|c| serde_json::from_str(c.value()).ok())
        .ok_or(TakeError::Missing)?;
    if !constant_time_eq(tx.state.as_bytes(), state.as_bytes()) {
        return Err(TakeError::Missing);
    }
    if !spent.spend(state) {
        return Err(TakeError::Replayed);
    }
    let age = now() - tx.created_at;
    if !(0..=TRANSACTION_TTL_SECS).contains(&age) {
        return Err(TakeError::Expired);
    }
    Ok(tx)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// States already used, for `TRANSACTION_TTL_SECS`; bounded so that memory stays flat.
pub(crate) struct SpentStates(ExpiringMap<()>);

impl SpentStates {
    pub fn new(capacity: usize) -> SpentStates {
        SpentStates(ExpiringMap::new(
            Duration::from_secs(TRANSACTION_TTL_SECS as u64),
            capacity,
        ))
    }

    /// Marks `state` spent; false if it already was.
    pub fn spend(&self, state: &str) -> bool {
        self.0.insert_new(state, ())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_spent_once() {
        let spent = SpentStates::new(10);
        assert!(spent.spend("a"));
        assert!(!spent.spend("a"));
    }

    #[test]
    fn spent_states_are_bounded() {
        let spent = SpentStates::new(100);
        for i in 0..10_000 {
            spent.spend(&format!("state-{i}"));
        }
        assert!(spent.len() <= 100);
    }
}
