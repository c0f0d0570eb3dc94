//! The Redis store: what several instances of the app share.
//!
//! Keys (all under the configured prefix, default `rocket_logto:`; `{h}` is a keyed hash of
//! a refresh token, the Redis Cluster hash tag that puts the keys of one refresh in one
//! slot; every key has a TTL):
//!
//! | key | value | TTL |
//! |---|---|---|
//! | `lease:{h}` | the instance refreshing `h` now | twice `http_timeout_secs`, plus 1 s |
//! | `flight:{h}` | set with the lease, removed by its outcome: a lease gone while this remains means its holder vanished mid-refresh, and the next caller asks Logto (introspection) whether the token is still good before sending it | the shorter session lifetime (inactivity or absolute) |
//! | `res:{h}:<target>` | the refresh's result for one (resource, organization): expiry and age in clear, tokens sealed | 2 minutes |
//! | `rot:{h}` | the token that replaced `h`, sealed | `rotation_grace_secs` |
//! | `spent:{h}` | never send `h` again (rotated out, failed, or used up by a holder that vanished) | the shorter session lifetime (inactivity or absolute) |
//! | `abandoned:{h}` | lease values of calls that timed out: should one still run (Redis hung, then resumed), it takes nothing | 1 hour at most |
//! | `jti:{j}` | a logout token's `jti` was used | 10 minutes |
//! | `ended` | sorted set of ended sessions `<sid\|sub\|ses>:<hash>:<ms>:<tag>`, scored by expiry | `session_lifetime_secs` |
//!
//! With `session_store = "redis"`, also `ses:{s}` (a session) and `user:{u}` (the sessions
//! of a user): see `sessions.rs`.
//!
//! and one pub/sub channel, `<prefix>events`: `r <h>` when a refresh's outcome is written,
//! `e <member>...` when sessions end, `s <s> <version>` and `d <s>` when a session of the
//! Redis session store is written or deleted. Each instance mirrors `ended` in memory (loaded at
//! connection and after every reconnection, then kept current by the channel), so checking
//! a request makes no round trip.
//!
//! Whoever can write to Redis can publish on the channel and add members to `ended`: another
//! app sharing the server under another prefix, or a client with stolen credentials. So
//! every message is `<tag> <body>` and every member ends in `:<tag>`, a MAC under a key
//! derived from `secret_key` ([`Keys::tag`]) bound to the channel or to the member's
//! fields. A message or member without a valid tag, a record dated later than now plus the
//! clock skew, or an announcement of more members than one is ever sent is ignored and
//! counted (warned at most once a minute). Publishing can then change nothing; deleting
//! keys remains a denial of service (see SECURITY.md).
//!
//! An instance that cannot subscribe while its commands work (a proxy without pub/sub, an
//! ACL without `SUBSCRIBE`) cannot hear of changes: until it can, it reads every session of
//! the Redis session store from Redis instead of its cache, and reloads `ended` every
//! [`POLL_UNSUBSCRIBED`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisFuture, RedisResult, Script, Value};
use rocket::futures::StreamExt;
use serde_json::json;
use tokio::sync::{broadcast, oneshot, OnceCell};

mod sentinel;
mod sessions;

use sessions::CachedSession;
pub(crate) use sessions::{Fetch, Move, SaveError};

use super::seal::{Keys, TAG_TEXT_LEN};
use super::{Begin, Ended, EndedRecord, Finish, Ident, Lease};
use super::{Refreshed, Successor, Target};
use crate::config::{LogtoConfig, RedisSettings, RedisUrl};
use crate::session::random_token;
use crate::util::clock::now_ms;
use crate::util::telemetry::{self, RedisOutcome};

/// How long a refresh's shared result is kept (as long as this process keeps its own).
const RESULT_TTL: Duration = Duration::from_secs(120);
/// How long a logout token's `jti` is remembered (as in process).
const JTI_TTL: Duration = Duration::from_secs(600);
/// Most ended records kept for Redis while it is unreachable.
const MAX_PENDING: usize = 10_000;
/// Ended records written per round trip when catching up.
const CHUNK: usize = 200;
/// A waiter re-checks at least this often, in case a pub/sub message was missed.
const POLL: Duration = Duration::from_millis(200);
/// How long a session of the Redis session store stays in an instance's cache.
const SESSION_CACHE_TTL: Duration = Duration::from_secs(300);
/// Health check of the pub/sub connection, and retry of records Redis could not take.
const TICK: Duration = Duration::from_secs(1);
/// How often `ended` is reloaded while the channel cannot be subscribed to: a change on one
/// instance reaches this one within a second.
const POLL_UNSUBSCRIBED: Duration = Duration::from_millis(400);
/// Most members an announcement of ended sessions carries (`write_ended` sends at most
/// [`CHUNK`]); one with more is ignored whole.
const MAX_MEMBERS: usize = CHUNK;
/// Longest message read from the channel: [`MAX_MEMBERS`] members and their tags fit well
/// within it. Longer ones are ignored before anything else is done with them.
const MAX_MESSAGE: usize = 64 * 1024;
/// Least time between two warnings about ignored announcements or members.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Looks at everything known about a refresh token and, if nothing says otherwise, takes
/// the lease to send it (atomically, so that one instance wins). As in one process, a token
/// never to be sent again gets nothing, not even a result shared for it, unless it was
/// rotated out within the grace (then `rot` is still there and the result is followed). A call its caller gave up
/// on (timed out, e.g. while Redis hung) may still run later: it then finds its lease value
/// in `abandoned` and takes nothing. A lease gone while `flight` remains means that its
/// holder vanished mid-refresh: the caller takes the lease and is told to ask Logto first
/// (`doubt`); `flight` then starts with `?`, so that giving up a timed-out call's lease
/// (ABANDON) leaves the doubt for the next caller.
/// KEYS: res, rot, spent, lease, flight, abandoned. ARGV: fresh_after (s), made_after (ms,
/// 0 = any), lease value, lease ms, remember ms.
static BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SISMEMBER', KEYS[6], ARGV[3]) == 1 then return {'abandoned', ''} end
local rot = redis.call('GET', KEYS[2])
if not rot and redis.call('EXISTS', KEYS[3]) == 1 then return {'spent', ''} end
local res = redis.call('GET', KEYS[1])
if res then
  local exp, made = string.match(res, '^(%d+):(%d+):')
  if exp and tonumber(exp) > tonumber(ARGV[1]) and tonumber(made) >= tonumber(ARGV[2]) then
    return {'result', res, rot or ''}
  end
end
if rot then return {'rotated', rot} end
local pttl = redis.call('PTTL', KEYS[4])
if pttl > 0 then return {'wait', tostring(pttl)} end
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4])
  redis.call('SET', KEYS[5], '?' .. ARGV[3], 'PX', ARGV[5])
  return {'doubt', ''}
end
redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4])
redis.call('SET', KEYS[5], ARGV[3], 'PX', ARGV[5])
return {'lease', ''}
",
    )
});

/// Writes the outcome of a refresh, releases its lease (if still the caller's) and tells
/// the waiters; `doubt` (Logto could not say whether a vanished holder used the token up)
/// keeps `flight`. KEYS: res, rot, spent, lease, flight. ARGV: kind (ok, spent, free, doubt), result,
/// result ms, successor ('' if none), grace ms, remember ms, channel, message, lease value.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[1] == 'ok' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  if ARGV[4] ~= '' then
    redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
    redis.call('SET', KEYS[3], '1', 'PX', ARGV[6])
  end
elseif ARGV[1] == 'spent' then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[6])
end
if redis.call('GET', KEYS[4]) == ARGV[9] then redis.call('DEL', KEYS[4]) end
if ARGV[1] ~= 'doubt' then
  local flight = redis.call('GET', KEYS[5])
  if flight == ARGV[9] or flight == '?' .. ARGV[9] then redis.call('DEL', KEYS[5]) end
end
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 1
",
    )
});

/// Gives up a lease that a timed-out call may have taken, whether that call already ran or
/// runs later. KEYS: lease, flight, abandoned. ARGV: lease value, ms to remember it.
static ABANDON: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
",
    )
});

/// Adds ended sessions, drops expired ones and tells every instance. KEYS: ended. ARGV: now
/// ms, key TTL ms, channel, message, then score and member pairs.
static ADD_ENDED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for i = 5, #ARGV, 2 do redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
",
    )
});

/// A connection of either kind (the manager and the cluster connection both reconnect by
/// themselves).
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(sentinel::SentinelConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
            Connection::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
            Connection::Sentinel(c) => c.get_db(),
        }
    }
}

enum Conn {
    Single(ConnectionManager),
    /// Connected on first use (and again after a failed attempt).
    Cluster(Box<(ClusterClient, OnceCell<ClusterConnection>)>),
    /// The master the sentinels name, looked up again after a failover.
    Sentinel(Arc<sentinel::Sentinel>),
}

/// Why an operation did not happen (details are logged where they occur, without the URL).
pub(crate) struct Down;

/// Names of the keys of one refresh.
struct RefreshKeys {
    h: String,
    res: String,
    rot: String,
    spent: String,
    lease: String,
    flight: String,
    abandoned: String,
}

/// A lease a timed-out call may hold: (lease key, flight key, abandoned key, lease value).
type Abandoned = (String, String, String, String);

pub(crate) struct RedisStore {
    conn: Conn,
    prefix: String,
    channel: String,
    keys: Keys,
    timeout: Duration,
    lease: Duration,
    grace: Duration,
    /// How long a refresh token is remembered as never to be sent again: a copy of a cookie
    /// that still carries it expires by inactivity at the latest (its last write is older
    /// than the rotation), so the shorter of the two session lifetimes is enough.
    spent_ttl: Duration,
    /// How long an ended session is remembered: a session may live that long.
    ended_ttl: Duration,
    /// Names this process in leases.
    instance: String,
    /// Hashes of refresh tokens whose outcome was just written, from the channel.
    events: broadcast::Sender<Arc<str>>,
    /// The mirror of ended sessions is current (subscribed and loaded).
    synced: AtomicBool,
    /// The channel is subscribed to: the session cache hears of changes.
    subscribed: AtomicBool,
    /// Announcements and ended members refused (no valid tag, dated in the future, too
    /// many members), and when that was last logged.
    ignored: std::sync::atomic::AtomicU64,
    ignored_warned: Mutex<Option<Instant>>,
    /// Allowed clock difference: a record dated later than now plus this is refused.
    skew_ms: i64,
    fail_closed: bool,
    /// Ended records Redis could not take yet.
    pending: Mutex<Vec<EndedRecord>>,
    /// Leases to give up once Redis answers again.
    abandoned: Mutex<Vec<Abandoned>>,
    ended: Arc<Ended>,
    /// Sessions of the Redis session store this instance served, by hash of their id.
    session_cache: crate::util::bounded::ExpiringMap<Arc<CachedSession>>,
    /// Counts cache clearings and session messages; `session_changes` keeps, by session,
    /// the count at its last message (for a few seconds). A read that saw its session change,
    /// or the cache cleared, is not cached: the value read may be older than the change.
    session_epoch: std::sync::atomic::AtomicU64,
    session_changes: crate::util::bounded::ExpiringMap<u64>,
    session_messages: std::sync::atomic::AtomicU64,
    session_lifetime: Duration,
    session_inactivity: Duration,
    urls: Vec<RedisUrl>,
    description: String,
    /// Dropped with the store: stops the pub/sub task.
    _stop: oneshot::Sender<()>,
}

fn secs_ms(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

impl RedisStore {
    /// The store, with its pub/sub task started. Nothing is connected yet: an unreachable
    /// Redis delays nothing at launch.
    pub fn start(
        config: &LogtoConfig,
        settings: &RedisSettings,
        secret: &[u8],
        ended: Arc<Ended>,
    ) -> Result<Arc<RedisStore>, String> {
        let timeout = settings.timeout;
        let conn = if settings.cluster {
            let client = ClusterClient::builder(settings.urls.iter().map(RedisUrl::expose))
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1)
                .build()
                .map_err(|e| {
                    format!("logto config: `redis_url` cannot be used for Redis Cluster ({e})")
                })?;
            Conn::Cluster(Box::new((client, OnceCell::new())))
        } else if let Some(master) = &settings.sentinel_master {
            Conn::Sentinel(sentinel::Sentinel::new(&settings.urls, master, timeout)?)
        } else {
            let client = ::redis::Client::open(settings.urls[0].expose())
                .map_err(|e| format!("logto config: `redis_url` cannot be used ({e})"))?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(1));
            let manager = ConnectionManager::new_lazy_with_config(client, manager_config)
                .map_err(|e| format!("logto config: `redis_url` cannot be used ({e})"))?;
            Conn::Single(manager)
        };
        // The instance's id marks the leases it takes (`lease:{h}` holds `<id>.<nonce>`):
        // logged, so that a lease left by a dead instance can be traced to it.
        let instance = random_token(9);
        let description = format!(
            "shared through Redis{} at {} (keys {}*; this instance's leases are marked {instance})",
            match &settings.sentinel_master {
                _ if settings.cluster => " Cluster".to_string(),
                Some(master) => format!(" master {master:?} of the Sentinels"),
                None => String::new(),
            },
            settings
                .urls
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            settings.key_prefix
        );
        let (stop, stopped) = oneshot::channel();
        let store = Arc::new(RedisStore {
            conn,
            prefix: settings.key_prefix.clone(),
            channel: format!("{}events", settings.key_prefix),
            keys: Keys::derive(secret),
            timeout,
            lease: config.http_timeout * 2 + Duration::from_secs(1),
            grace: config.rotation_grace,
            spent_ttl: config
                .session_lifetime
                .min(config.session_inactivity)
                .max(config.rotation_grace),
            ended_ttl: config.session_lifetime,
            instance,
            events: broadcast::channel(1024).0,
            synced: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            ignored: std::sync::atomic::AtomicU64::new(0),
            ignored_warned: Mutex::new(None),
            skew_ms: config.clock_skew.as_millis() as i64,
            fail_closed: settings.fail_closed,
            pending: Mutex::new(Vec::new()),
            abandoned: Mutex::new(Vec::new()),
            ended,
            session_cache: crate::util::bounded::ExpiringMap::new(
                SESSION_CACHE_TTL,
                config.session_cache_entries,
            ),
            session_epoch: std::sync::atomic::AtomicU64::new(0),
            session_messages: std::sync::atomic::AtomicU64::new(0),
            session_changes: crate::util::bounded::ExpiringMap::new(
                Duration::from_secs(10),
                config.session_cache_entries,
            ),
            session_lifetime: config.session_lifetime,
            session_inactivity: config.session_inactivity,
            urls: settings.urls.clone(),
            description,
            _stop: stop,
        });
        tokio::spawn(subscriber(
            Arc::downgrade(&store),
            store.urls.clone(),
            stopped,
        ));
        Ok(store)
    }

    pub fn describe(&self) -> String {
        self.description.clone()
    }

    pub fn ident(&self, value: Ident<'_>) -> String {
        match value {
            Ident::Sid(v) => self.keys.ident("sid", v.as_bytes()),
            Ident::Sub(v) => self.keys.ident("sub", v.as_bytes()),
            Ident::Jti(v) => self.keys.ident("jti", v.as_bytes()),
            Ident::Session { sub, created_at_ms } => self
                .keys
                .ident("ses", format!("{sub}\u{0}{created_at_ms}").as_bytes()),
        }
    }

    pub fn refuse_unchecked_sessions(&self) -> bool {
        self.fail_closed && !self.synced.load(Ordering::Relaxed)
    }

    /// `body` as published: its tag (bound to the channel), a space, the body.
    pub(super) fn signed_message(&self, body: &str) -> String {
        let tag = self
            .keys
            .tag("announce", self.message_scope(body).as_bytes());
        format!("{tag} {body}")
    }

    fn message_scope(&self, body: &str) -> String {
        format!("{}\u{0}{body}", self.channel)
    }

    /// The body of a message that this app published; `None` (counted) for anything else.
    fn open_message<'p>(&self, payload: &'p [u8]) -> Option<&'p str> {
        if payload.len() > MAX_MESSAGE {
            self.ignore("an announcement longer than any this app sends");
            return None;
        }
        let opened = std::str::from_utf8(payload)
            .ok()
            .and_then(|text| text.split_once(' '))
            .filter(|(tag, body)| {
                self.keys
                    .verify_tag("announce", self.message_scope(body).as_bytes(), tag)
            })
            .map(|(_, body)| body);
        if opened.is_none() {
            self.ignore("an announcement without a valid tag");
        }
        opened
    }

    /// An ended record as stored and announced: its fields and their tag.
    fn signed_member(&self, record: &EndedRecord) -> String {
        let fields = record.member();
        let tag = self.keys.tag("ended", fields.as_bytes());
        format!("{fields}:{tag}")
    }

    /// A stored or announced member, if this app wrote it and it is not dated in the future
    /// (beyond the clock skew); otherwise `None`, counted.
    fn open_member(&self, member: &str, now_ms: i64) -> Option<EndedRecord> {
        let record = member
            .rsplit_once(':')
            .filter(|(fields, tag)| {
                tag.len() == TAG_TEXT_LEN && self.keys.verify_tag("ended", fields.as_bytes(), tag)
            })
            .and_then(|(fields, _)| EndedRecord::parse(fields));
        match record {
            Some(r) if r.at_ms <= now_ms.saturating_add(self.skew_ms) => Some(r),
            Some(_) => {
                self.ignore("an ended record dated in the future");
                None
            }
            None => {
                self.ignore("an ended record without a valid tag");
                None
            }
        }
    }

    /// Counts something refused from Redis, and says so at most once a minute: another app
    /// or client writes under this prefix, or instances run with different `secret_key`s.
    fn ignore(&self, what: &str) {
        telemetry::redis_ignored();
        let total = self.ignored.fetch_add(1, Ordering::Relaxed) + 1;
        let mut warned = self.ignored_warned.lock().expect("warned lock");
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            log::warn!(
                "logto: event=redis_ignored total={total}: ignored {what} on Redis (channel {}); {total} refused so far. Someone \
                 else publishes or writes under this key prefix, or the instances do not share \
                 one secret_key",
                crate::util::logsafe::for_log(&self.channel)
            );
        }
    }

    /// Announcements and members refused since launch.
    #[allow(dead_code)] // read by tests
    pub fn ignored(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }

    /// Whether the session cache may answer: only while subscribed, since only then does it
    /// hear of changes made by other instances.
    pub(super) fn cache_trusted(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    fn key(&self, kind: &str, h: &str) -> String {
        format!("{}{kind}:{{{h}}}", self.prefix)
    }

    fn refresh_keys(&self, token: &str, target: &Target) -> RefreshKeys {
        let h = self.keys.ident("rt", token.as_bytes());
        let (resource, organization) = target;
        let t = self.keys.ident(
            "target",
            format!(
                "{}\u{0}{}",
                resource.as_deref().unwrap_or("\u{1}"),
                organization.as_deref().unwrap_or("\u{1}")
            )
            .as_bytes(),
        );
        RefreshKeys {
            res: format!("{}:{}", self.key("res", &h), &t[..22]),
            rot: self.key("rot", &h),
            spent: self.key("spent", &h),
            lease: self.key("lease", &h),
            flight: self.key("flight", &h),
            abandoned: self.key("abandoned", &h),
            h,
        }
    }

    async fn connection(&self) -> RedisResult<Connection> {
        match &self.conn {
            Conn::Single(manager) => Ok(Connection::Single(manager.clone())),
            Conn::Cluster(cluster) => cluster
                .1
                .get_or_try_init(|| cluster.0.get_async_connection())
                .await
                .map(|c| Connection::Cluster(c.clone())),
            // Boxed: its future nests deep enough to pass the compiler's query depth limit in
            // the guards that await it.
            Conn::Sentinel(sentinel) => Box::pin(sentinel.connection())
                .await
                .map(Connection::Sentinel),
        }
    }

    /// Runs a script within the timeout.
    async fn script<T: ::redis::FromRedisValue>(
        &self,
        what: &'static str,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, Down> {
        let run = async {
            let mut connection = self.connection().await?;
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(*key);
            }
            for arg in args {
                invocation.arg(*arg);
            }
            invocation.invoke_async(&mut connection).await
        };
        self.within(what, run).await
    }

    /// Runs a pipeline within the timeout.
    async fn pipeline<T: ::redis::FromRedisValue>(
        &self,
        what: &'static str,
        pipe: Pipeline,
    ) -> Result<T, Down> {
        let run = async {
            let mut connection = self.connection().await?;
            pipe.query_async(&mut connection).await
        };
        self.within(what, run).await
    }

    /// Runs a command within the timeout.
    async fn command<T: ::redis::FromRedisValue>(
        &self,
        what: &'static str,
        cmd: Cmd,
    ) -> Result<T, Down> {
        let run = async {
            let mut connection = self.connection().await?;
            cmd.query_async(&mut connection).await
        };
        self.within(what, run).await
    }

    async fn within<T>(
        &self,
        what: &'static str,
        run: impl std::future::Future<Output = RedisResult<T>>,
    ) -> Result<T, Down> {
        let started = telemetry::start();
        let kind = operation_kind(what);
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(value)) => {
                telemetry::redis_operation(kind, RedisOutcome::Ok, started);
                Ok(value)
            }
            Ok(Err(e)) => {
                telemetry::redis_operation(kind, RedisOutcome::Error, started);
                log::warn!(
                    "logto: event=redis outcome=error kind={kind}: Redis failed to {what} ({}); going on without it",
                    crate::util::logsafe::for_log(&e.to_string())
                );
                Err(Down)
            }
            Err(_) => {
                telemetry::redis_operation(kind, RedisOutcome::Timeout, started);
                log::warn!(
                    "logto: event=redis outcome=timeout kind={kind}: Redis did not answer to {what} within {} ms; going on without it",
                    self.timeout.as_millis()
                );
                Err(Down)
            }
        }
    }

    /// Whether Redis answers a `PING` within the timeout (a readiness probe).
    pub async fn ping(&self) -> bool {
        self.command::<Value>("ping", ::redis::cmd("PING"))
            .await
            .is_ok()
    }

    /// Whether the channel is subscribed to and the ended sessions loaded.
    pub fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire) && self.synced.load(Ordering::Relaxed)
    }

    fn open_successor(&self, name: &str, value: &[u8]) -> Option<Successor> {
        let plain = self.keys.open(name, value, 0)?;
        let v: serde_json::Value = serde_json::from_slice(&plain).ok()?;
        Some(Successor {
            refresh_token: v.get("rt")?.as_str()?.to_string(),
            id_token: v.get("id").and_then(|t| t.as_str()).map(str::to_string),
        })
    }

    fn seal_successor(&self, name: &str, s: &Successor) -> Vec<u8> {
        let plain = json!({ "rt": s.refresh_token, "id": s.id_token }).to_string();
        self.keys.seal(name, b"", plain.as_bytes())
    }

    fn open_result(&self, name: &str, value: &[u8]) -> Option<Refreshed> {
        // The clear header `<expires_at>:<made_at_ms>:`, which the Lua script compares.
        let first = value.iter().position(|&b| b == b':')?;
        let second = first + 1 + value[first + 1..].iter().position(|&b| b == b':')?;
        let expires_at: i64 = std::str::from_utf8(&value[..first]).ok()?.parse().ok()?;
        let made_ms: i64 = std::str::from_utf8(&value[first + 1..second])
            .ok()?
            .parse()
            .ok()?;
        let plain = self.keys.open(name, value, second + 1)?;
        let v: serde_json::Value = serde_json::from_slice(&plain).ok()?;
        let age = Duration::from_millis(now_ms().saturating_sub(made_ms).max(0) as u64);
        Some(Refreshed {
            refresh_token: v.get("rt")?.as_str()?.to_string(),
            id_token: v.get("id").and_then(|t| t.as_str()).map(str::to_string),
            access_token: v.get("at")?.as_str()?.to_string(),
            expires_at,
            made_at: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
        })
    }

    fn seal_result(&self, name: &str, r: &Refreshed) -> Vec<u8> {
        let made_ms = now_ms() - r.made_at.elapsed().as_millis() as i64;
        let header = format!("{}:{}:", r.expires_at.max(0), made_ms.max(0));
        let plain = json!({ "rt": r.refresh_token, "id": r.id_token, "at": r.access_token });
        self.keys
            .seal(name, header.as_bytes(), plain.to_string().as_bytes())
    }

    pub async fn begin_refresh(
        &self,
        token: &str,
        target: &Target,
        fresh_after: i64,
        made_after: Option<Instant>,
    ) -> Begin {
        let k = self.refresh_keys(token, target);
        let made_after_ms = made_after
            .map(|m| now_ms() - m.elapsed().as_millis() as i64)
            .unwrap_or(0)
            .max(0);
        let lease_value = format!("{}.{}", self.instance, random_token(9));
        // Subscribed before the first look, so that no outcome slips between the two.
        let mut events = self.events.subscribe();
        let give_up = Instant::now() + self.lease + self.timeout;
        let (fresh, made, lease_ms, remember_ms) = (
            fresh_after.max(0).to_string(),
            made_after_ms.to_string(),
            secs_ms(self.lease).to_string(),
            secs_ms(self.spent_ttl).to_string(),
        );
        loop {
            let answer: Vec<Vec<u8>> = match self
                .script(
                    "check a refresh",
                    &BEGIN,
                    &[&k.res, &k.rot, &k.spent, &k.lease, &k.flight, &k.abandoned],
                    &[
                        fresh.as_bytes(),
                        made.as_bytes(),
                        lease_value.as_bytes(),
                        lease_ms.as_bytes(),
                        remember_ms.as_bytes(),
                    ],
                )
                .await
            {
                Ok(answer) => answer,
                Err(Down) => {
                    // The call may still run when Redis answers again: give its lease up then.
                    let mut abandoned = self.abandoned.lock().expect("abandoned lock");
                    if abandoned.len() < MAX_PENDING {
                        abandoned.push((
                            k.lease.clone(),
                            k.flight.clone(),
                            k.abandoned.clone(),
                            lease_value.clone(),
                        ));
                    }
                    return Begin::Unavailable;
                }
            };
            let field = |i: usize| answer.get(i).map(Vec::as_slice).unwrap_or_default();
            match field(0) {
                b"lease" => return Begin::Proceed(Lease(Some(lease_value))),
                b"result" => {
                    let successor = match field(2) {
                        b"" => None,
                        rot => match self.open_successor(&k.rot, rot) {
                            Some(s) => Some(s),
                            None => return self.tampered(&k.rot),
                        },
                    };
                    return match self.open_result(&k.res, field(1)) {
                        Some(result) => Begin::Shared { result, successor },
                        None => match successor {
                            Some(s) => {
                                self.tampered(&k.res);
                                Begin::Rotated(s)
                            }
                            None => self.tampered(&k.res),
                        },
                    };
                }
                b"rotated" => {
                    return match self.open_successor(&k.rot, field(1)) {
                        Some(s) => Begin::Rotated(s),
                        None => self.tampered(&k.rot),
                    }
                }
                b"spent" => return Begin::Spent,
                b"doubt" => return Begin::Doubt(Lease(Some(lease_value))),
                b"wait" => {
                    let pttl: u64 = std::str::from_utf8(field(1))
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(100);
                    let now = Instant::now();
                    if now >= give_up {
                        return Begin::Unavailable;
                    }
                    let wake = now + POLL.min(Duration::from_millis(pttl + 5));
                    wait_for(&mut events, &k.h, wake.min(give_up)).await;
                }
                _ => return Begin::Unavailable,
            }
        }
    }

    fn tampered(&self, name: &str) -> Begin {
        log::warn!(
            "logto: a refresh record in Redis ({}… {}) failed authentication (changed, moved, \
             or written under another secret_key); it is ignored and the token is not sent",
            // The key's kind, and a short hash for the rest: in full it is the token's
            // fingerprint.
            crate::util::logsafe::for_log(name.split('{').next().unwrap_or_default()),
            crate::util::logsafe::short_hash(name)
        );
        Begin::Spent
    }

    pub async fn finish_refresh(
        self: &Arc<Self>,
        lease: Lease,
        token: &str,
        target: &Target,
        finish: Finish<'_>,
    ) {
        let Some(lease_value) = lease.0 else { return };
        let k = self.refresh_keys(token, target);
        let (kind, result, successor) = match finish {
            Finish::Refreshed { result, successor } => (
                "ok",
                self.seal_result(&k.res, result),
                successor
                    .map(|s| self.seal_successor(&k.rot, s))
                    .unwrap_or_default(),
            ),
            Finish::Spent => ("spent", Vec::new(), Vec::new()),
            Finish::Free => ("free", Vec::new(), Vec::new()),
            Finish::Doubt => ("doubt", Vec::new(), Vec::new()),
        };
        let args: Vec<Vec<u8>> = vec![
            kind.into(),
            result,
            secs_ms(RESULT_TTL).to_string().into(),
            successor,
            secs_ms(self.grace).to_string().into(),
            secs_ms(self.spent_ttl).to_string().into(),
            self.channel.clone().into(),
            self.signed_message(&format!("r {}", k.h)).into(),
            lease_value.into(),
        ];
        let keys = [k.res, k.rot, k.spent, k.lease, k.flight];
        if self.write_outcome(&keys, &args).await {
            return;
        }
        // Redis failed between the lease and now: keep trying while the lease lasts, or the
        // other instances will take the token for spent by a vanished holder.
        let store = self.clone();
        let until = Instant::now() + self.lease;
        tokio::spawn(async move {
            while Instant::now() < until {
                tokio::time::sleep(POLL).await;
                if store.write_outcome(&keys, &args).await {
                    return;
                }
            }
        });
    }

    async fn write_outcome(&self, keys: &[String; 5], args: &[Vec<u8>]) -> bool {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        self.script::<i64>("record a refresh", &FINISH, &keys, &args)
            .await
            .is_ok()
    }

    pub async fn successor(&self, token: &str) -> Option<Successor> {
        let name = self.key("rot", &self.keys.ident("rt", token.as_bytes()));
        let value: Option<Vec<u8>> = self
            .command("follow a rotation", ::redis::cmd("GET").arg(&name).clone())
            .await
            .ok()?;
        self.open_successor(&name, &value?)
    }

    pub async fn first_use_of_jti(&self, jti: &str) -> Option<bool> {
        let name = self.key("jti", &self.ident(Ident::Jti(jti)));
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(&name)
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(secs_ms(JTI_TTL));
        let answer: Value = self.command("check a logout token", cmd).await.ok()?;
        Some(!matches!(answer, Value::Nil))
    }

    pub async fn share_ended(&self, records: Vec<EndedRecord>) {
        if self.write_ended(&records).await {
            self.flush_pending().await;
        } else {
            let mut pending = self.pending.lock().expect("pending lock");
            pending.extend(records);
            if pending.len() > MAX_PENDING {
                let excess = pending.len() - MAX_PENDING;
                pending.drain(..excess);
                log::warn!(
                    "logto: {excess} ended sessions could not be kept for Redis while it is down"
                );
            }
            log::warn!(
                "logto: {} ended session(s) are recorded in this instance only until Redis is back",
                pending.len()
            );
        }
    }

    /// Writes and announces `records`.
    async fn write_ended(&self, records: &[EndedRecord]) -> bool {
        if records.is_empty() {
            return true;
        }
        let now = now_ms();
        let remember = secs_ms(self.ended_ttl) as i64;
        let ended_key = format!("{}ended", self.prefix);
        for chunk in records.chunks(CHUNK) {
            let members: Vec<String> = chunk.iter().map(|r| self.signed_member(r)).collect();
            let mut args: Vec<Vec<u8>> = vec![
                now.to_string().into(),
                remember.to_string().into(),
                self.channel.clone().into(),
                self.signed_message(&format!("e {}", members.join(" ")))
                    .into(),
            ];
            for (record, member) in chunk.iter().zip(members) {
                args.push((record.at_ms + remember).to_string().into());
                args.push(member.into());
            }
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            if self
                .script::<i64>("share ended sessions", &ADD_ENDED, &[&ended_key], &args)
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Gives up the leases of calls that timed out; keeps those Redis could not take.
    async fn flush_abandoned(&self) {
        let abandoned = std::mem::take(&mut *self.abandoned.lock().expect("abandoned lock"));
        let ttl = secs_ms(self.spent_ttl.min(Duration::from_secs(3600))).to_string();
        let mut left = Vec::new();
        for entry in abandoned {
            let (lease, flight, set, value) = &entry;
            if !left.is_empty()
                || self
                    .script::<i64>(
                        "give up a lease",
                        &ABANDON,
                        &[lease, flight, set],
                        &[value.as_bytes(), ttl.as_bytes()],
                    )
                    .await
                    .is_err()
            {
                left.push(entry);
            }
        }
        self.abandoned.lock().expect("abandoned lock").extend(left);
    }

    /// Retries what Redis could not take: ended records and abandoned leases.
    async fn catch_up(&self) {
        let pending = !self.pending.lock().expect("pending lock").is_empty();
        if pending {
            self.flush_pending().await;
        }
        let abandoned = !self.abandoned.lock().expect("abandoned lock").is_empty();
        if abandoned {
            self.flush_abandoned().await;
        }
    }

    async fn flush_pending(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        if !pending.is_empty() && !self.write_ended(&pending).await {
            let mut guard = self.pending.lock().expect("pending lock");
            let newer = std::mem::take(&mut *guard);
            *guard = pending;
            guard.extend(newer);
        }
    }

    /// After (re)connecting: loads every ended session into the mirror, then writes back
    /// what this instance knows and Redis does not (written while it was down, or lost by a
    /// restart), announcing it to the other instances.
    async fn resync(&self) -> bool {
        self.flush_abandoned().await;
        let now = now_ms();
        let mut cmd = ::redis::cmd("ZRANGEBYSCORE");
        cmd.arg(format!("{}ended", self.prefix))
            .arg(now)
            .arg("+inf");
        let Ok(members) = self
            .command::<Vec<String>>("load ended sessions", cmd)
            .await
        else {
            return false;
        };
        let mut known = HashSet::with_capacity(members.len());
        for member in members {
            if let Some(record) = self.open_member(&member, now) {
                self.ended.insert(&record);
                known.insert(member);
            }
        }
        let pending = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        let remember = secs_ms(self.ended_ttl) as i64;
        let mut seen = HashSet::new();
        let missing: Vec<EndedRecord> = pending
            .into_iter()
            .chain(self.ended.snapshot())
            .filter(|r| r.at_ms + remember > now)
            .filter(|r| {
                let member = self.signed_member(r);
                !known.contains(&member) && seen.insert(member)
            })
            .collect();
        if !self.write_ended(&missing).await {
            self.pending.lock().expect("pending lock").extend(missing);
            return false;
        }
        true
    }

    fn on_message(&self, payload: &[u8]) {
        telemetry::redis_announcement();
        let Some(text) = self.open_message(payload) else {
            return;
        };
        match text.split_once(' ') {
            Some(("r", h)) => {
                let _ = self.events.send(Arc::from(h));
            }
            Some(("e", members)) => {
                if members.split(' ').nth(MAX_MEMBERS).is_some() {
                    self.ignore("an announcement of more ended sessions than this app sends");
                    return;
                }
                let now = now_ms();
                for member in members.split(' ') {
                    if let Some(record) = self.open_member(member, now) {
                        self.ended.insert(&record);
                    }
                }
            }
            Some((kind @ ("s" | "d"), rest)) => self.on_session_message(kind, rest),
            _ => {}
        }
    }
}

/// Waits until the outcome for `h` is announced or `until`.
async fn wait_for(events: &mut broadcast::Receiver<Arc<str>>, h: &str, until: Instant) {
    let until = tokio::time::Instant::from_std(until);
    loop {
        match tokio::time::timeout_at(until, events.recv()).await {
            Ok(Ok(done)) if &*done == h => return,
            Ok(Ok(_)) => continue,
            // Missed messages (one of them may be ours) or no channel: look again now.
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => return,
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                tokio::time::sleep_until(until).await;
                return;
            }
            Err(_) => return,
        }
    }
}

/// Keeps a subscription to the channel, the mirror loaded after each (re)connection, and
/// the records Redis could not take retried; ends with the store.
async fn subscriber(store: Weak<RedisStore>, urls: Vec<RedisUrl>, mut stop: oneshot::Receiver<()>) {
    let mut backoff = Duration::from_millis(100);
    let mut was_down = false;
    let mut next_url = 0;
    loop {
        let (channel, timeout, sentinel) = match store.upgrade() {
            Some(s) => (
                s.channel.clone(),
                s.timeout,
                match &s.conn {
                    Conn::Sentinel(sentinel) => Some(sentinel.clone()),
                    _ => None,
                },
            ),
            None => return,
        };
        let url = urls[next_url % urls.len()].clone();
        let attempt = async {
            let client = match &sentinel {
                Some(sentinel) => Box::pin(sentinel.master_client()).await?,
                None => ::redis::Client::open(url.expose())?,
            };
            let mut pubsub = tokio::time::timeout(timeout * 2, client.get_async_pubsub())
                .await
                .map_err(|_| {
                    ::redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
                })??;
            tokio::time::timeout(timeout * 2, pubsub.subscribe(&channel))
                .await
                .map_err(|_| {
                    ::redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
                })??;
            Ok::<_, ::redis::RedisError>(pubsub)
        };
        let connected = tokio::select! {
            _ = &mut stop => return,
            r = attempt => r,
        };
        match connected {
            Ok(pubsub) => {
                let synced = match store.upgrade() {
                    Some(s) => {
                        let ok = tokio::select! {
                            _ = &mut stop => return,
                            ok = s.resync() => ok,
                        };
                        s.synced.store(ok, Ordering::Relaxed);
                        ok
                    }
                    None => return,
                };
                if synced {
                    // Changes of sessions may have been announced while unsubscribed.
                    if let Some(s) = store.upgrade() {
                        s.subscribed.store(true, Ordering::Release);
                        s.clear_sessions();
                    }
                    telemetry::redis_subscribed(true);
                    if was_down {
                        log::warn!("logto: event=redis_subscription outcome=up: Redis is back; ended sessions reloaded");
                    } else {
                        log::info!("logto: event=redis_subscription outcome=up: connected to Redis; ended sessions loaded");
                    }
                    was_down = false;
                    backoff = Duration::from_millis(100);
                    let (mut sink, mut stream) = pubsub.split();
                    let mut tick = tokio::time::interval(TICK);
                    tick.tick().await;
                    loop {
                        tokio::select! {
                            _ = &mut stop => return,
                            message = stream.next() => match message {
                                Some(message) => match store.upgrade() {
                                    Some(s) => s.on_message(message.get_payload_bytes()),
                                    None => return,
                                },
                                None => break,
                            },
                            _ = tick.tick() => {
                                let alive = tokio::time::timeout(timeout, sink.ping::<Value>()).await;
                                if !matches!(alive, Ok(Ok(_))) {
                                    break;
                                }
                                match store.upgrade() {
                                    Some(s) => s.catch_up().await,
                                    None => return,
                                }
                            }
                        }
                    }
                }
                if let Some(s) = store.upgrade() {
                    s.subscribed.store(false, Ordering::Release);
                    s.synced.store(false, Ordering::Relaxed);
                }
                telemetry::redis_subscribed(false);
                if !was_down {
                    log::warn!(
                        "logto: event=redis_subscription outcome=down: lost the Redis subscription; sessions are served from their \
                         cookies and refreshes wait until it is back"
                    );
                }
                was_down = true;
            }
            Err(e) => {
                if let Some(s) = store.upgrade() {
                    s.subscribed.store(false, Ordering::Release);
                    s.synced.store(false, Ordering::Relaxed);
                }
                telemetry::redis_subscribed(false);
                if !was_down {
                    log::warn!(
                        "logto: event=redis_subscription outcome=down: cannot subscribe to Redis at {url} ({}); until it can, this \
                         instance hears of no change made elsewhere, so it reads every session \
                         of the Redis session store from Redis and reloads the ended sessions \
                         every {} ms. Retrying in the background",
                        crate::util::logsafe::for_log(&e.to_string()),
                        POLL_UNSUBSCRIBED.as_millis()
                    );
                }
                was_down = true;
                next_url += 1;
                // Commands may work where subscribing does not (a proxy without pub/sub, an
                // ACL without SUBSCRIBE): keep the mirror current by reading it until the next
                // attempt.
                let next_attempt = Instant::now() + backoff;
                loop {
                    let Some(s) = store.upgrade() else { return };
                    let loaded = tokio::select! {
                        _ = &mut stop => return,
                        ok = s.resync() => ok,
                    };
                    s.synced.store(loaded, Ordering::Relaxed);
                    drop(s);
                    if Instant::now() + POLL_UNSUBSCRIBED >= next_attempt {
                        break;
                    }
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(POLL_UNSUBSCRIBED) => {}
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// The `kind` label of a Redis operation, from what it does (a short fixed list).
fn operation_kind(what: &'static str) -> &'static str {
    match what {
        "check a refresh" => "refresh_begin",
        "record a refresh" => "refresh_finish",
        "give up a lease" => "refresh_abandon",
        "follow a rotation" => "rotation",
        "check a logout token" => "logout_jti",
        "share ended sessions" => "ended_write",
        "load ended sessions" => "ended_load",
        "read a session" => "session_read",
        "write a session" => "session_write",
        "index a session" | "unindex a session" | "drop a session index" => "session_index",
        "announce a session change" => "session_announce",
        "delete a session" | "remember an ended session" => "session_delete",
        "move a session" => "session_move",
        "list sessions" => "session_list",
        "ping" => "ping",
        _ => "other",
    }
}
