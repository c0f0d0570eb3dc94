//! Redis Sentinel (`redis_sentinel_master`): where the master is, asked of the sentinels
//! through the `redis` crate's `SentinelClient`, and asked again once a connection to it
//! fails or it answers as a replica, so that a failover is followed without a restart.
//!
//! The crate's connection manager reconnects to one fixed address, which after a failover is
//! a dead server or a read-only replica; hence this small wrapper: one multiplexed connection
//! to the master shared by every request, replaced (once, whoever notices first) when it
//! breaks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    RedisResult, TlsMode, Value,
};

use crate::config::RedisUrl;

pub(super) struct Sentinel {
    /// Asks the sentinels; its lock also makes one request at a time look the master up.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The connection to the master in use, and its generation (so that a failure seen on an
    /// older connection does not drop a newer one).
    current: Mutex<(u64, Option<MultiplexedConnection>)>,
    config: AsyncConnectionConfig,
    timeout: Duration,
}

/// A clone of the shared connection that reports its failures back.
#[derive(Clone)]
pub(super) struct SentinelConnection {
    conn: MultiplexedConnection,
    generation: u64,
    sentinel: Arc<Sentinel>,
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

impl Sentinel {
    /// `urls` are the sentinels'; their user, password and TLS are used for the master too
    /// (sentinels and master usually share them).
    pub fn new(
        urls: &[RedisUrl],
        master: &str,
        timeout: Duration,
    ) -> Result<Arc<Sentinel>, String> {
        let first = urls[0].expose().into_connection_info().map_err(|e| {
            format!("logto config: `redis_url` cannot be used for Redis Sentinel ({e})")
        })?;
        let mut node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(first.redis_settings().clone());
        if urls[0].is_tls() {
            node = node.set_tls_mode(TlsMode::Secure);
        }
        let client = SentinelClient::build(
            urls.iter().map(RedisUrl::expose).collect(),
            master,
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(|e| {
            format!("logto config: `redis_url` cannot be used for Redis Sentinel ({e})")
        })?;
        Ok(Arc::new(Sentinel {
            client: tokio::sync::Mutex::new(client),
            current: Mutex::new((0, None)),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
            timeout,
        }))
    }

    /// A client for the master the sentinels name now.
    pub async fn master_client(&self) -> RedisResult<Client> {
        let mut client = self.client.lock().await;
        tokio::time::timeout(self.timeout * 2, client.async_get_client())
            .await
            .map_err(|_| timed_out())?
    }

    /// The shared connection to the master, made (after asking the sentinels) if there is none.
    pub async fn connection(self: &Arc<Self>) -> RedisResult<SentinelConnection> {
        if let Some(c) = self.shared() {
            return Ok(c);
        }
        let mut client = self.client.lock().await;
        // Another request may have connected while this one waited for the lock.
        if let Some(c) = self.shared() {
            return Ok(c);
        }
        let connect = async {
            let master = client.async_get_client().await?;
            master
                .get_multiplexed_async_connection_with_config(&self.config)
                .await
        };
        let conn = tokio::time::timeout(self.timeout * 2, connect)
            .await
            .map_err(|_| timed_out())??;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.0 += 1;
        current.1 = Some(conn.clone());
        Ok(SentinelConnection {
            conn,
            generation: current.0,
            sentinel: self.clone(),
        })
    }

    fn shared(self: &Arc<Self>) -> Option<SentinelConnection> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.1.clone().map(|conn| SentinelConnection {
            conn,
            generation: current.0,
            sentinel: self.clone(),
        })
    }

    fn forget(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 == generation {
            current.1 = None;
        }
    }
}

impl SentinelConnection {
    /// After a failure that says the server is gone or is no longer the master, the next
    /// request asks the sentinels again. Errors of a command itself (a script's) keep it.
    fn after<T>(&self, result: &RedisResult<T>) {
        if let Err(e) = result {
            if e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
                || e.is_unrecoverable_error()
                || e.code()
                    .is_some_and(|c| matches!(c, "READONLY" | "LOADING" | "MASTERDOWN"))
            {
                self.sentinel.forget(self.generation);
            }
        }
    }
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.req_packed_command(cmd).await;
            self.after(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.after(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}
