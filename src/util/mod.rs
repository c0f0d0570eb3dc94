//! Small tools every layer may use, which know nothing of Logto, sessions or Rocket: the
//! bounded expiring map, single flight, log-safe text, the log rate limit, the clock, and
//! the metrics every layer records.

pub(crate) mod bounded;
pub(crate) mod clock;
pub(crate) mod jose;
pub(crate) mod log_limit;
pub(crate) mod logsafe;
pub(crate) mod single_flight;
pub(crate) mod telemetry;
