//! Sessions kept in Redis (`session_store = "redis"`): the Redis side. The browser holds a
//! random id (32 bytes) in one private cookie; everything else is here.
//!
//! | key | value | TTL |
//! |---|---|---|
//! | `ses:{s}` | one session, sealed (AES-256-GCM under a key derived from `secret_key`, bound to the key name): its version, the user agent (200 characters at most) and the session in the cookie codec's format | the shorter of what is left of its absolute and inactivity lifetimes |
//! | `user:{u}` | set of the `s` of one user's sessions, for listing and ending them | `session_lifetime_secs`, renewed by every write |
//! | `gone:{s}` | a session deleted (signed out, ended, expired): the cookie session it was moved from cannot be moved in again | `session_lifetime_secs` |
//! | `moved:{s}` | a cookie session was just moved in: its cookies, still sent by the browser's parallel requests, join it | `rotation_grace_secs` |
//!
//! `s` is a keyed hash of the session id (never the id itself: reading Redis gives no
//! cookie), `u` a keyed hash of the user's `sub`. The two keys of one write live in different
//! Redis Cluster slots, so they are written one command at a time.
//!
//! Every write and deletion is announced on the `<prefix>events` channel (`s <s> <version>`,
//! `d <s>`), and each instance keeps a bounded cache of the sessions it served, dropping an
//! entry whose version changed elsewhere: a request whose session is cached and unchanged
//! costs no Redis call. When the subscription is lost, messages may be missed: the cache is
//! emptied once it is made again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use std::sync::LazyLock;

use ::redis::{Script, Value};

use super::{Down, RedisStore};
use crate::claims::IdTokenClaims;
use crate::session::codec::MAX_REDIS_SESSION;
use crate::session::{Session, TooLarge};
use crate::util::clock::now_ms;
use crate::util::jose::decode_jwt_payload;

/// Format of the sealed session value.
const FORMAT: u8 = 1;

/// A session as stored, decoded once per instance.
pub(crate) struct CachedSession {
    pub version: u64,
    pub session: Arc<Session>,
    pub claims: Arc<IdTokenClaims>,
    pub user_agent: Option<Arc<str>>,
}

/// What Redis says about a session id.
pub(crate) enum Fetch {
    Found(Arc<CachedSession>),
    /// Never stored, expired, deleted, flushed, or unreadable: signed out.
    Unknown,
    /// Redis cannot be reached now.
    Down,
}

/// Why a session was not written.
pub(crate) enum SaveError {
    /// Redis cannot be reached now (or the session cannot be stored at all: its ID token
    /// does not parse, its lifetime is over).
    Down,
    /// Larger than `MAX_REDIS_SESSION` before compression: it would not read back, so
    /// nothing was written (the caller leaves something out and tries again).
    TooLarge(usize),
}

impl From<Down> for SaveError {
    fn from(_: Down) -> SaveError {
        SaveError::Down
    }
}

/// One stored session of a user, for the admin API.
pub(crate) struct Listed {
    pub hash: String,
    pub created_at_ms: i64,
    pub seen_at: i64,
    pub user_agent: Option<String>,
}

/// Writes a session only over the version it was read at. KEYS: the session. ARGV: the
/// expected clear header `<version>:`, the new value, its TTL in ms.
static REPLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, string.len(ARGV[1])) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
",
    )
});

/// Decides what the cookies of a cookie session may do when they arrive at an instance of the
/// Redis store: be moved in (the first time), join the session they were moved to (within
/// the grace after the move: the browser's parallel requests), or nothing (moved longer ago,
/// or ended since). KEYS: ses, moved, gone (one hash tag). ARGV: grace ms.
static MOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('EXISTS', KEYS[2]) == 1 then return 'join' end
  return 'refuse'
end
if redis.call('EXISTS', KEYS[3]) == 1 then return 'refuse' end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return 'new'
",
    )
});

/// What the cookies of a cookie session may do in the Redis store (see [`MOVE`]).
pub(crate) enum Move {
    New,
    Join,
    Refuse,
}

/// A version number for a new write: time-ordered and unique across instances in practice,
/// so that two instances writing the same session never announce the same version.
fn new_version() -> u64 {
    let random = rand::random::<u16>() as u64;
    ((now_ms().max(0) as u64) << 16) | random
}

/// The value of a session before sealing: refused, as the codec refuses it, when it
/// would not read back.
fn encode(version: u64, user_agent: Option<&str>, session: &Session) -> Result<Vec<u8>, TooLarge> {
    let raw = crate::session::codec::to_raw(session, MAX_REDIS_SESSION)?;
    // Its length is written in two bytes: a longer agent (callers keep 200 characters,
    // but nothing here relies on it) is cut where a character starts, so that the length
    // written is the length of what follows, and the value still reads back.
    let agent = truncate(user_agent.unwrap_or(""), u16::MAX as usize);
    let mut out = Vec::with_capacity(1 + 8 + 2 + agent.len() + raw.len());
    out.push(FORMAT);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(agent.len() as u16).to_le_bytes());
    out.extend_from_slice(agent.as_bytes());
    out.extend_from_slice(&raw);
    Ok(out)
}

/// The longest start of `text` of at most `max` bytes that ends at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn decode(plain: &[u8]) -> Option<(u64, Option<String>, crate::session::codec::Read)> {
    let (&format, rest) = plain.split_first()?;
    if format != FORMAT || rest.len() < 10 {
        return None;
    }
    let version = u64::from_le_bytes(rest[..8].try_into().ok()?);
    let agent_len = u16::from_le_bytes(rest[8..10].try_into().ok()?) as usize;
    let rest = &rest[10..];
    if rest.len() < agent_len {
        return None;
    }
    let agent = std::str::from_utf8(&rest[..agent_len]).ok()?;
    // Raw since this release; packed text before (still read).
    let read = crate::session::codec::from_stored(&rest[agent_len..], MAX_REDIS_SESSION)?;
    let agent = (!agent.is_empty()).then(|| agent.to_string());
    Some((version, agent, read))
}

impl RedisStore {
    /// The keyed hash that names the session of id `id` (and is its admin handle).
    pub fn session_hash(&self, id: &str) -> String {
        self.keys.ident("session id", id.as_bytes())
    }

    /// The id of a cookie session moved into Redis, from its first cookie's exact value.
    pub fn moved_session_id(&self, cookie_value: &str) -> String {
        self.keys.ident("moved session", cookie_value.as_bytes())
    }

    fn session_key(&self, hash: &str) -> String {
        self.key("ses", hash)
    }

    fn user_key(&self, sub: &str) -> String {
        self.key("user", &self.keys.ident("sessions of", sub.as_bytes()))
    }

    /// The cached session `hash`, if this instance holds its current version: no round trip.
    /// Only while the cache can be trusted (subscribed: it hears of every change elsewhere);
    /// otherwise `None`, and [`Self::fetch_session`] reads Redis.
    pub fn cached_session(&self, hash: &str) -> Option<Arc<CachedSession>> {
        if !self.cache_trusted() {
            return None;
        }
        self.session_cache.get(hash)
    }

    /// Reads session `hash` from Redis (and caches it); with Redis unreachable, the cached
    /// copy if any.
    pub async fn fetch_session(&self, hash: &str) -> Fetch {
        let seen = || {
            (
                self.session_epoch.load(Ordering::Acquire),
                self.session_changes.get(hash),
            )
        };
        let before = seen();
        let key = self.session_key(hash);
        let value: Option<Vec<u8>> = match self
            .command("read a session", ::redis::cmd("GET").arg(&key).clone())
            .await
        {
            Ok(v) => v,
            // Unreachable Redis: what this instance cached is served, as while subscribed
            // (no change elsewhere can be made or heard meanwhile).
            Err(Down) => {
                return match self.session_cache.get(hash) {
                    Some(cached) => Fetch::Found(cached),
                    None => Fetch::Down,
                }
            }
        };
        let Some(value) = value else {
            return Fetch::Unknown;
        };
        let Some(cached) = self.open_session(&key, &value) else {
            log::warn!(
                "logto: a session in Redis failed authentication or could not be read (changed, \
                 or written under another secret_key); treated as signed out"
            );
            return Fetch::Unknown;
        };
        let cached = Arc::new(cached);
        // A change announced while reading may be newer than what was read: not cached.
        if seen() == before {
            self.session_cache.insert(hash, cached.clone());
        }
        Fetch::Found(cached)
    }

    fn open_session(&self, key: &str, value: &[u8]) -> Option<CachedSession> {
        // The version is also in the clear (authenticated) header, for `REPLACE`.
        let colon = value.iter().take(24).position(|&b| b == b':')?;
        let plain = self.keys.open(key, value, colon + 1)?;
        let (version, agent, read) = decode(&plain)?;
        if value[..colon] != *version.to_string().as_bytes() {
            return None;
        }
        let session = read.session;
        let claims = match read.claims {
            Some(claims) => claims,
            None => decode_jwt_payload::<IdTokenClaims>(&session.id_token).ok()?,
        };
        Some(CachedSession {
            version,
            session: Arc::new(session),
            claims: Arc::new(claims),
            user_agent: agent.map(Arc::from),
        })
    }

    /// Milliseconds `session` may still live: the shorter of its absolute and inactivity
    /// lifetimes; 0 when it is over.
    fn remaining_ms(&self, session: &Session) -> i64 {
        let now = now_ms();
        let absolute = session.created_at_ms + self.session_lifetime.as_millis() as i64 - now;
        let inactivity = session.seen_at * 1000 + self.session_inactivity.as_millis() as i64 - now;
        absolute.min(inactivity).max(0)
    }

    /// Writes session `hash` (a new version), indexes it under its user, announces it, and
    /// caches it here. The claims are those of `session`'s ID token. With `replace`, only
    /// over that version (a re-stamp must not undo a refresh written meanwhile elsewhere):
    /// `None` when another write came first, and nothing was written. A session too large
    /// to read back is not written (`SaveError::TooLarge`), whatever was there stays.
    pub async fn save_session(
        &self,
        hash: &str,
        session: Arc<Session>,
        user_agent: Option<Arc<str>>,
        replace: Option<u64>,
    ) -> Result<Option<Arc<CachedSession>>, SaveError> {
        let claims: IdTokenClaims = decode_jwt_payload(&session.id_token).map_err(|_| Down)?;
        let version = new_version();
        // Encoded before anything is sent: a session refused for its size changes nothing.
        let plain = encode(version, user_agent.as_deref(), &session)
            .map_err(|TooLarge(bytes)| SaveError::TooLarge(bytes))?;
        let ttl = self.remaining_ms(&session);
        if ttl <= 0 {
            self.delete_session(hash).await?;
            return Err(SaveError::Down);
        }
        let key = self.session_key(hash);
        let value = self
            .keys
            .seal(&key, format!("{version}:").as_bytes(), &plain);
        match replace {
            None => {
                let mut set = ::redis::cmd("SET");
                set.arg(&key).arg(value).arg("PX").arg(ttl);
                self.command::<Value>("write a session", set).await?;
            }
            Some(previous) => {
                let expected = format!("{previous}:");
                let ttl = ttl.to_string();
                let written: i64 = self
                    .script(
                        "write a session",
                        &REPLACE,
                        &[&key],
                        &[expected.as_bytes(), &value, ttl.as_bytes()],
                    )
                    .await?;
                if written == 0 {
                    self.session_cache.remove(hash);
                    return Ok(None);
                }
            }
        }
        let user_key = self.user_key(&claims.sub);
        let mut index = ::redis::pipe();
        index
            .atomic()
            .cmd("SADD")
            .arg(&user_key)
            .arg(hash)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&user_key)
            .arg(self.session_lifetime.as_millis() as u64)
            .ignore();
        self.pipeline::<()>("index a session", index).await?;
        let cached = Arc::new(CachedSession {
            version,
            session,
            claims: Arc::new(claims),
            user_agent,
        });
        // Cached before the announcement, which then finds the same version here.
        self.session_cache.insert(hash, cached.clone());
        self.announce(format!("s {hash} {version}")).await;
        Ok(Some(cached))
    }

    async fn announce(&self, message: String) {
        let mut publish = ::redis::cmd("PUBLISH");
        publish
            .arg(&self.channel)
            .arg(self.signed_message(&message));
        let _ = self
            .command::<Value>("announce a session change", publish)
            .await;
    }

    /// Deletes session `hash` and announces it; whether it existed.
    pub async fn delete_session(&self, hash: &str) -> Result<bool, Down> {
        self.remove_session(hash).await.map(|(deleted, _)| deleted)
    }

    /// Deletes session `hash` and announces it: whether it existed, and the user and start
    /// of the session it held, when readable.
    pub async fn remove_session(&self, hash: &str) -> Result<(bool, Option<(String, i64)>), Down> {
        self.session_cache.remove(hash);
        let key = self.session_key(hash);
        let value: Option<Vec<u8>> = self
            .command("read a session", ::redis::cmd("GET").arg(&key).clone())
            .await?;
        let held = value
            .and_then(|v| self.open_session(&key, &v))
            .map(|c| (c.claims.sub.clone(), c.session.created_at_ms));
        let deleted: i64 = self
            .command("delete a session", ::redis::cmd("DEL").arg(&key).clone())
            .await?;
        if let Some((sub, _)) = &held {
            let mut srem = ::redis::cmd("SREM");
            srem.arg(self.user_key(sub)).arg(hash);
            let _ = self.command::<Value>("unindex a session", srem).await;
        }
        // Remembered as ended for as long as it could have lived: the cookies it was moved
        // from (cookie store) cannot bring it back.
        let mut gone = ::redis::cmd("SET");
        gone.arg(self.key("gone", hash))
            .arg("1")
            .arg("PX")
            .arg(self.session_lifetime.as_millis().max(1) as u64);
        let _ = self
            .command::<Value>("remember an ended session", gone)
            .await;
        self.session_cache.remove(hash);
        self.announce(format!("d {hash}")).await;
        Ok((deleted > 0, held))
    }

    /// Whether the cookie session whose moved id hashes to `hash` may move in (see [`MOVE`]).
    pub async fn may_move(&self, hash: &str) -> Result<Move, Down> {
        let grace = self.grace.as_millis().max(1).to_string();
        let answer: String = self
            .script(
                "move a session",
                &MOVE,
                &[
                    &self.session_key(hash),
                    &self.key("moved", hash),
                    &self.key("gone", hash),
                ],
                &[grace.as_bytes()],
            )
            .await?;
        Ok(match answer.as_str() {
            "new" => Move::New,
            "join" => Move::Join,
            _ => Move::Refuse,
        })
    }

    /// The stored sessions of `sub` (dropping index entries of sessions gone).
    pub async fn list_sessions(&self, sub: &str) -> Result<Vec<Listed>, Down> {
        let user_key = self.user_key(sub);
        let hashes: Vec<String> = self
            .command(
                "list sessions",
                ::redis::cmd("SMEMBERS").arg(&user_key).clone(),
            )
            .await?;
        let mut out = Vec::with_capacity(hashes.len());
        for hash in hashes {
            let key = self.session_key(&hash);
            let value: Option<Vec<u8>> = self
                .command("read a session", ::redis::cmd("GET").arg(&key).clone())
                .await?;
            match value.and_then(|v| self.open_session(&key, &v)) {
                Some(c) if c.claims.sub == sub => out.push(Listed {
                    created_at_ms: c.session.created_at_ms,
                    seen_at: c.session.seen_at,
                    user_agent: c.user_agent.as_deref().map(str::to_string),
                    hash,
                }),
                _ => {
                    let mut srem = ::redis::cmd("SREM");
                    srem.arg(&user_key).arg(&hash);
                    let _ = self.command::<Value>("unindex a session", srem).await;
                }
            }
        }
        out.sort_by_key(|l| l.created_at_ms);
        Ok(out)
    }

    /// Deletes every stored session of `sub`; how many there were.
    pub async fn end_user_sessions(&self, sub: &str) -> Result<usize, Down> {
        let listed = self.list_sessions(sub).await?;
        let mut ended = 0;
        for l in &listed {
            if self.delete_session(&l.hash).await? {
                ended += 1;
            }
        }
        let _ = self
            .command::<Value>(
                "drop a session index",
                ::redis::cmd("DEL").arg(self.user_key(sub)).clone(),
            )
            .await;
        Ok(ended)
    }

    /// Empties the cache (the subscription was made again: messages may have been missed).
    pub(super) fn clear_sessions(&self) {
        self.session_epoch.fetch_add(1, Ordering::AcqRel);
        self.session_cache.clear();
    }

    /// Notes that session `hash` was announced as changed.
    fn changed(&self, hash: &str) {
        let n = self.session_messages.fetch_add(1, Ordering::AcqRel);
        self.session_changes.insert(hash, n);
    }

    /// A message of the channel about sessions: drops what changed elsewhere.
    pub(super) fn on_session_message(&self, kind: &str, rest: &str) {
        match kind {
            "s" => {
                let Some((hash, version)) = rest.split_once(' ') else {
                    return;
                };
                self.changed(hash);
                let version: Option<u64> = version.parse().ok();
                if self
                    .session_cache
                    .get(hash)
                    .is_some_and(|c| Some(c.version) != version)
                {
                    self.session_cache.remove(hash);
                }
            }
            "d" => {
                self.changed(rest);
                self.session_cache.remove(rest);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_round_trip_and_refuse_junk() {
        let s = Session {
            id_token: "a.b.c".into(),
            refresh_token: Some("rt".into()),
            userinfo_token: None,
            tokens: vec![],
            user_info: None,
            created_at_ms: 5,
            seen_at: 6,
        };
        let bytes = encode(7, Some("Firefox"), &s).unwrap();
        let (v, agent, back) = decode(&bytes).unwrap();
        assert_eq!((v, agent.as_deref()), (7, Some("Firefox")));
        assert_eq!(back.session, s);
        let (_, agent, _) = decode(&encode(1, None, &s).unwrap()).unwrap();
        assert_eq!(agent, None);
        for n in 0..bytes.len() {
            let _ = decode(&bytes[..n]);
        }
        assert!(decode(b"").is_none());
        assert!(new_version() != new_version() || new_version() > 0);
    }

    #[test]
    fn a_user_agent_over_the_length_field_is_cut_at_a_character_boundary() {
        let s = Session {
            id_token: "a.b.c".into(),
            refresh_token: None,
            userinfo_token: None,
            tokens: vec![],
            user_info: None,
            created_at_ms: 5,
            seen_at: 6,
        };
        // 65,534 ASCII bytes then 3-byte characters: the cut falls inside one.
        let agent = format!("{}{}", "a".repeat(65_534), "\u{20ac}".repeat(10));
        let (_, back, read) = decode(&encode(7, Some(&agent), &s).unwrap()).expect("reads back");
        assert_eq!(back.as_deref(), Some(&agent[..65_534]));
        assert_eq!(read.session, s);
        assert_eq!(truncate("\u{e9}t\u{e9}", 4), "\u{e9}t");
        assert_eq!(truncate("\u{e9}t\u{e9}", 5), "\u{e9}t\u{e9}");
        assert_eq!(truncate("abc", 65_535), "abc");
    }
}

/// Against a real `redis-server` (on PATH, as for the integration tests: scripts/setup).
#[cfg(test)]
mod with_redis {
    use std::time::Duration;

    use base64::Engine as _;

    use super::*;
    use crate::config::LogtoConfig;
    use crate::store::redis::{MAX_MEMBERS, MAX_MESSAGE};
    use crate::store::{Ended, Fetch};

    struct Server(std::process::Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn redis_store() -> (Server, Arc<RedisStore>) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/setup)");
        let server = Server(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let toml = format!(
            "[logto]\nendpoint='http://l'\napp_id='a'\napp_secret='s'\nbase_url='http://b'\n\
             redis_url='redis://127.0.0.1:{port}'\nsession_store='redis'"
        );
        let figment = figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(&toml),
        );
        let config = LogtoConfig::from_figment_with_env(&figment, |_| None).unwrap();
        let ended = Arc::new(Ended::new(Duration::from_secs(60), 10));
        let store =
            RedisStore::start(&config, config.redis.as_ref().unwrap(), &[7u8; 64], ended).unwrap();
        (server, store)
    }

    fn session(refresh_token: &str) -> Arc<Session> {
        let now = crate::util::clock::now();
        let payload = serde_json::json!({ "iss": "i", "sub": "u", "aud": "a", "exp": now + 3600, "iat": now });
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        Arc::new(Session {
            id_token: format!(
                "{}.{}.c2ln",
                b64(b"{}"),
                b64(payload.to_string().as_bytes())
            )
            .into(),
            refresh_token: Some(refresh_token.into()),
            userinfo_token: None,
            tokens: vec![],
            user_info: None,
            created_at_ms: now_ms(),
            seen_at: now,
        })
    }

    #[tokio::test]
    async fn ended_records_and_announcements_need_this_apps_tag_and_a_time_not_ahead() {
        use crate::store::{EndedKind, EndedRecord};
        let (_server, store) = redis_store().await;
        let now = now_ms();
        let record = |at_ms| EndedRecord {
            kind: EndedKind::Sub,
            ident: "u".into(),
            at_ms,
        };
        let signed = store.signed_member(&record(now));
        assert_eq!(store.open_member(&signed, now), Some(record(now)));
        // Within the clock skew (60 s by default), and beyond it.
        let near = store.signed_member(&record(now + 30_000));
        assert_eq!(store.open_member(&near, now), Some(record(now + 30_000)));
        let ahead = store.signed_member(&record(now + 61_000));
        assert_eq!(store.open_member(&ahead, now), None);
        // Unsigned, re-dated with the tag of another time, tagged under another key.
        assert_eq!(store.open_member(&record(now).member(), now), None);
        let tag = signed.rsplit_once(':').unwrap().1;
        let redated = format!("{}:{tag}", record(now + 1).member());
        assert_eq!(store.open_member(&redated, now), None);
        let other = crate::store::seal::Keys::derive(&[8u8; 64]);
        let fields = record(now).member();
        let foreign = format!("{fields}:{}", other.tag("ended", fields.as_bytes()));
        assert_eq!(store.open_member(&foreign, now), None);
        assert_eq!(store.ignored(), 4);

        // Messages: only this app's, of at most MAX_MEMBERS members, reach the mirror.
        let ended = |ident: &str| store.ended.ended_at(EndedKind::Sub, || ident.into());
        store.on_message(format!("e {signed}").as_bytes());
        assert_eq!(ended("u"), None, "an unsigned message");
        let many: Vec<String> = (0..=MAX_MEMBERS)
            .map(|n| {
                store.signed_member(&EndedRecord {
                    kind: EndedKind::Sub,
                    ident: format!("m{n}"),
                    at_ms: now,
                })
            })
            .collect();
        store.on_message(
            store
                .signed_message(&format!("e {}", many.join(" ")))
                .as_bytes(),
        );
        assert_eq!(ended("m0"), None, "more members than one message carries");
        store.on_message(store.signed_message(&format!("e {}", many[0])).as_bytes());
        assert_eq!(ended("m0"), Some(now));
        store.on_message(store.signed_message(&format!("e {signed}")).as_bytes());
        assert_eq!(ended("u"), Some(now));
        store.on_message(&vec![b'e'; MAX_MESSAGE + 1]);
        assert_eq!(store.ignored(), 7);
    }

    #[tokio::test]
    async fn a_restamp_never_overwrites_a_newer_write() {
        let (_server, store) = redis_store().await;
        let first = store
            .save_session("h", session("rt-1"), Some(Arc::from("agent")), None)
            .await
            .ok()
            .flatten()
            .expect("written");
        // A refresh elsewhere writes a newer version (a new refresh token).
        let second = store
            .save_session("h", session("rt-2"), Some(Arc::from("agent")), None)
            .await
            .ok()
            .flatten()
            .expect("written");
        // A re-stamp of the copy read at the first version writes nothing.
        let stale = store
            .save_session("h", session("rt-1"), None, Some(first.version))
            .await
            .ok()
            .expect("Redis answered");
        assert!(stale.is_none());
        store.session_cache.clear();
        let Fetch::Found(read) = store.fetch_session("h").await else {
            panic!("the session is there")
        };
        assert_eq!(read.version, second.version);
        assert_eq!(read.session.refresh_token.as_deref(), Some("rt-2"));
        assert_eq!(read.user_agent.as_deref(), Some("agent"));
        // At the current version it is written.
        let restamped = store
            .save_session(
                "h",
                read.session.clone(),
                read.user_agent.clone(),
                Some(read.version),
            )
            .await
            .ok()
            .flatten();
        assert!(restamped.is_some());
        // Deleted: unknown.
        assert!(store.delete_session("h").await.ok().unwrap());
        assert!(matches!(store.fetch_session("h").await, Fetch::Unknown));
    }

    #[tokio::test]
    async fn a_session_over_the_limit_is_not_written_and_the_one_there_stays() {
        let (_server, store) = redis_store().await;
        store
            .save_session("h", session("rt-1"), None, None)
            .await
            .ok()
            .flatten()
            .expect("written");
        // Over 1 MiB before compression, though it compresses to almost nothing.
        let mut large = (*session("rt-2")).clone();
        large.user_info = Some(serde_json::json!({ "notes": "x".repeat(MAX_REDIS_SESSION) }));
        match store.save_session("h", Arc::new(large), None, None).await {
            Err(SaveError::TooLarge(bytes)) => assert!(bytes > MAX_REDIS_SESSION, "{bytes}"),
            _ => panic!("written, though it would not read back"),
        }
        store.session_cache.clear();
        let Fetch::Found(read) = store.fetch_session("h").await else {
            panic!("the session written before is there")
        };
        assert_eq!(read.session.refresh_token.as_deref(), Some("rt-1"));
    }
}
