//! A browser's cookies for an *untracked* local client, kept by hand so that a test can
//! send any copy of them (the copy from before a rotation, say, next to the current one).
#![allow(dead_code)]

use std::collections::BTreeMap;

use rocket::http::{Accept, Cookie, Status};
use rocket::local::asynchronous::{Client, LocalResponse};
use serde_json::Value;

use crate::app::{path_and_query, set_cookies};
use crate::fake_flow::authorized_callback;
use crate::fake_provider::FakeProvider;

/// Cookie name -> value, as a browser would send them.
#[derive(Clone, Default, Debug)]
pub struct Browser(pub BTreeMap<String, String>);

impl Browser {
    /// Signs in as `sub` through `client` (untracked) and `fp`.
    pub async fn signed_in(client: &Client, fp: &FakeProvider, sub: &str) -> Browser {
        let (callback, transaction) = authorized_callback(client, fp, sub).await;
        let response = client
            .get(path_and_query(&callback))
            .cookies(transaction)
            .dispatch()
            .await;
        assert_eq!(response.status(), Status::SeeOther, "sign-in failed");
        let mut browser = Browser::default();
        browser.absorb(&response);
        browser.session_name();
        browser
    }

    /// Takes the cookies `response` sets or removes.
    pub fn absorb(&mut self, response: &LocalResponse<'_>) {
        for cookie in response.cookies().iter() {
            if cookie.max_age().is_some_and(|age| age.is_zero()) {
                self.0.remove(cookie.name());
            } else {
                self.0
                    .insert(cookie.name().to_string(), cookie.value().to_string());
            }
        }
    }

    /// What it sends.
    pub fn cookies(&self) -> Vec<Cookie<'static>> {
        self.0
            .iter()
            .map(|(name, value)| Cookie::new(name.clone(), value.clone()))
            .collect()
    }

    /// The name of the first session cookie (`logto_session` on http).
    pub fn session_name(&self) -> &str {
        self.0
            .keys()
            .find(|n| n.ends_with("logto_session"))
            .expect("a session cookie")
    }

    /// How many session cookies (chunks) it holds.
    pub fn session_chunks(&self) -> usize {
        let first = self.session_name();
        self.0.keys().filter(|n| n.starts_with(first)).count()
    }

    /// GET `path` as JSON, keeping what the answer sets: status, body, `Set-Cookie` lines.
    pub async fn browse(&mut self, client: &Client, path: &str) -> (Status, Value, Vec<String>) {
        let response = client
            .get(path.to_string())
            .cookies(self.cookies())
            .header(Accept::JSON)
            .dispatch()
            .await;
        self.absorb(&response);
        let (status, lines) = (response.status(), set_cookies(&response));
        let body = response.into_string().await.unwrap_or_default();
        let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, body, lines)
    }

    /// The status of a GET as JSON, not keeping what the answer sets.
    pub async fn status_of(&self, client: &Client, path: &str) -> Status {
        client
            .get(path.to_string())
            .cookies(self.cookies())
            .header(Accept::JSON)
            .dispatch()
            .await
            .status()
    }
}
