//! The sender: a tokio task that peeks a batch from the outbox, sends it as
//! one OTLP/gRPC `LogsService.Export` call, and acknowledges it in the
//! outbox only when the collector accepted it (at least once: a crash
//! between the two sends the batch again, counted as retried).
//!
//! Failures are retried with exponential backoff and full jitter between
//! `backoff_initial` and `backoff_max`; the retryable codes are the OTLP
//! specification's. RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` in the
//! status details waits exactly the delay the collector asked for. Any
//! other code keeps the records (evidence is never dropped because of a
//! misconfiguration), logs an error (once a minute at most) and waits
//! `backoff_max`.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use fdr_proto::v1::outbox_record::Kind;
use opentelemetry_proto::tonic::collector::logs::v1::{
    logs_service_client::LogsServiceClient, ExportLogsServiceResponse,
};
use prost::Message;
use tonic::{
    metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Code, Status,
};

use crate::{
    config::OtlpConfig,
    otlp::{request, Source},
    outbox::{Outbox, OutboxError, Peeked},
};

/// The database the outbox lives in, as the sender reaches it: the agent's
/// store (its own error handling around redb) or a plain redb database.
pub trait Access: Send + Sync + 'static {
    /// Runs `f` on the database for a read.
    fn read(
        &self,
        f: &mut dyn FnMut(&redb::Database) -> Result<(), OutboxError>,
    ) -> Result<(), OutboxError>;
    /// Runs `f` on the database for a write.
    fn write(
        &self,
        f: &mut dyn FnMut(&redb::Database) -> Result<(), OutboxError>,
    ) -> Result<(), OutboxError>;
}

impl Access for Arc<redb::Database> {
    fn read(
        &self,
        f: &mut dyn FnMut(&redb::Database) -> Result<(), OutboxError>,
    ) -> Result<(), OutboxError> {
        f(self)
    }
    fn write(
        &self,
        f: &mut dyn FnMut(&redb::Database) -> Result<(), OutboxError>,
    ) -> Result<(), OutboxError> {
        f(self)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("export.otlp.endpoint {endpoint:?}: {detail}")]
    Endpoint { endpoint: String, detail: String },
    #[error("export.otlp: reading {what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("export.otlp: {0}")]
    Invalid(String),
}

/// How often the outbox is looked at when nothing woke the sender.
const POLL: Duration = Duration::from_secs(5);

/// Whether an OTLP export failure with `code` may be retried (the OTLP
/// specification's list).
pub fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Cancelled
            | Code::OutOfRange
            | Code::DataLoss
    )
}

/// The collector's message in a partial success.
fn msg_of(resp: &tonic::Response<ExportLogsServiceResponse>) -> String {
    resp.get_ref()
        .partial_success
        .as_ref()
        .map(|p| p.error_message.clone())
        .unwrap_or_default()
}

/// The longest delay a collector's `RetryInfo` is honoured with.
pub const RETRY_INFO_MAX: Duration = Duration::from_secs(900);

/// `google.rpc.Status`, as sent in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<prost_types::Duration>,
}

pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The delay a `RetryInfo` in the status details asks for.
pub fn retry_delay(status: &Status) -> Option<Duration> {
    let st = RpcStatus::decode(status.details()).ok()?;
    st.details
        .iter()
        .filter(|a| a.type_url == RETRY_INFO_TYPE)
        .find_map(|a| RetryInfo::decode(a.value.as_slice()).ok()?.retry_delay)
        .map(|d| {
            Duration::new(
                d.seconds.max(0) as u64,
                d.nanos.clamp(0, 999_999_999) as u32,
            )
        })
}

/// A uniform draw in `[lo, hi]` (std only: a hash of the clock and a
/// counter under a random key).
fn jitter(lo: Duration, hi: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Relaxed));
    h.write_u64(crate::outbox::now_ns());
    let span = hi.saturating_sub(lo).as_nanos() as u64;
    let r = if span == 0 {
        0
    } else {
        h.finish() % (span + 1)
    };
    lo + Duration::from_nanos(r)
}

fn channel(cfg: &OtlpConfig) -> Result<Channel, SenderError> {
    let bad = |detail: String| SenderError::Endpoint {
        endpoint: cfg.endpoint.clone(),
        detail,
    };
    let mut ep = Endpoint::from_shared(cfg.endpoint.trim().to_owned())
        .map_err(|e| bad(e.to_string()))?
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(10)));
    if cfg.endpoint.trim().starts_with("https://") {
        let read = |what: &'static str, p: &std::path::Path| {
            std::fs::read(p).map_err(|source| SenderError::File {
                what,
                path: p.display().to_string(),
                source,
            })
        };
        let mut tls = ClientTlsConfig::new();
        tls = match &cfg.ca_file {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read("ca_file", ca)?)),
            None => tls.with_native_roots(),
        };
        if let (Some(c), Some(k)) = (&cfg.cert_file, &cfg.key_file) {
            tls = tls.identity(Identity::from_pem(
                read("cert_file", c)?,
                read("key_file", k)?,
            ));
        }
        if let Some(name) = &cfg.server_name {
            tls = tls.domain_name(name.clone());
        }
        ep = ep.tls_config(tls).map_err(|e| bad(e.to_string()))?;
    }
    Ok(ep.connect_lazy())
}

fn metadata(cfg: &OtlpConfig) -> Result<MetadataMap, SenderError> {
    let mut md = MetadataMap::new();
    if let Some(p) = &cfg.token_file {
        let token = std::fs::read_to_string(p).map_err(|source| SenderError::File {
            what: "token_file",
            path: p.display().to_string(),
            source,
        })?;
        let v = AsciiMetadataValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| SenderError::Invalid("token_file: not printable ASCII".into()))?;
        md.insert("authorization", v);
    }
    for (k, v) in &cfg.headers {
        let key = AsciiMetadataKey::from_bytes(k.as_bytes())
            .map_err(|_| SenderError::Invalid(format!("headers: bad name {k:?}")))?;
        let val = AsciiMetadataValue::try_from(v.as_str())
            .map_err(|_| SenderError::Invalid(format!("headers.{k}: bad value")))?;
        md.insert(key, val);
    }
    Ok(md)
}

/// Starts the sender on the current tokio runtime. Errors: files that cannot
/// be read, an endpoint that does not parse (the collector being down is
/// not an error: the records wait in the outbox).
pub fn spawn(
    cfg: OtlpConfig,
    outbox: Arc<Outbox>,
    db: Arc<dyn Access>,
    source: Source,
) -> Result<tokio::task::JoinHandle<()>, SenderError> {
    let ch = channel(&cfg)?;
    let md = metadata(&cfg)?;
    let client = LogsServiceClient::new(ch)
        .max_decoding_message_size(4 << 20)
        .max_encoding_message_size(usize::MAX);
    tracing::info!(endpoint = %cfg.endpoint, "OTLP logs export started");
    Ok(tokio::spawn(run(cfg, outbox, db, source, client, md)))
}

async fn blocking<T: Send + 'static>(
    db: &Arc<dyn Access>,
    write: bool,
    f: impl FnMut(&redb::Database) -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, OutboxError> {
    let db = db.clone();
    let mut f = f;
    tokio::task::spawn_blocking(move || {
        let mut out = None;
        let mut g = |d: &redb::Database| {
            out = Some(f(d)?);
            Ok(())
        };
        if write {
            db.write(&mut g)?;
        } else {
            db.read(&mut g)?;
        }
        out.ok_or_else(|| OutboxError::Db("no result".into()))
    })
    .await
    .map_err(|e| OutboxError::Db(format!("the outbox task failed: {e}")))?
}

async fn run(
    cfg: OtlpConfig,
    outbox: Arc<Outbox>,
    db: Arc<dyn Access>,
    source: Source,
    mut client: LogsServiceClient<Channel>,
    md: MetadataMap,
) {
    let m = outbox.metrics().clone();
    let mut backoff = cfg.backoff_initial;
    let mut last_sent: Option<u64> = None;
    let mut last_loud: Option<Instant> = None;
    // Halved while the collector answers RESOURCE_EXHAUSTED without a
    // RetryInfo (its message size limit, typically 4 MiB, is below the
    // batch), back to the configured size one doubling per success.
    let mut shrink: u32 = 0;
    loop {
        let max_records = (cfg.batch_records >> shrink).max(1);
        let max_bytes = (cfg.batch_bytes >> shrink).max(1);
        let o = outbox.clone();
        let peeked: Result<Peeked, _> =
            blocking(&db, false, move |d| o.peek(d, max_records, max_bytes)).await;
        let batch = match peeked {
            Ok(p) => p,
            Err(e) => {
                m.set_error(e.to_string());
                tracing::warn!(err = %e, "export outbox: reading failed");
                tokio::time::sleep(jitter(backoff, backoff.saturating_mul(2))).await;
                backoff = (backoff * 2).min(cfg.backoff_max);
                continue;
            }
        };
        tracing::trace!(
            records = batch.items.len(),
            queued = batch.records,
            sent_up_to = batch.sent_up_to,
            "export outbox peeked"
        );
        if batch.items.is_empty() {
            tokio::select! {
                _ = outbox.woken() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            continue;
        }
        let sent_before = *last_sent.get_or_insert(batch.sent_up_to);
        let up_to = batch.items.last().map_or(0, |q| q.serial);
        let again = batch
            .items
            .iter()
            .filter(|q| q.serial <= sent_before)
            .count() as u64;
        if again > 0 {
            m.retried.fetch_add(again, Relaxed);
        }
        if up_to > sent_before {
            let o = outbox.clone();
            if let Err(e) = blocking(&db, true, move |d| o.mark_sent(d, up_to)).await {
                tracing::debug!(err = %e, "export outbox: noting the batch as sent");
            }
            last_sent = Some(up_to);
        }
        let undecodable = batch.items.iter().filter(|q| q.record.is_none()).count() as u64;
        let records: Vec<&fdr_proto::v1::OutboxRecord> = batch
            .items
            .iter()
            .filter_map(|q| q.record.as_ref())
            .collect();
        let n = records.len() as u64;
        let mut req = tonic::Request::new(request(&records, &source));
        *req.metadata_mut() = md.clone();
        req.set_timeout(cfg.timeout);
        let delay = match client.export(req).await {
            Ok(resp) => {
                let rejected = resp
                    .get_ref()
                    .partial_success
                    .as_ref()
                    .map_or(0, |p| p.rejected_log_records.max(0) as u64)
                    .min(n);
                if rejected > 0 {
                    tracing::warn!(rejected, message = %msg_of(&resp), "the collector rejected log records");
                    m.rejected.fetch_add(rejected, Relaxed);
                }
                m.rejected.fetch_add(undecodable, Relaxed);
                // Records that will not arrive are never dropped silently:
                // a gap record says how many, which serials and why (not
                // for a batch of gap records only, which would loop).
                let lost = rejected + undecodable;
                let gap = (lost > 0 && !records.iter().all(|r| r.kind() == Kind::Gap)).then(|| {
                    let times = records
                        .iter()
                        .map(|r| crate::outbox::ts_ns(r.queued.as_ref()));
                    let first = times.clone().filter(|&t| t > 0).min();
                    let last = times.max();
                    let mut why = Vec::new();
                    if rejected > 0 {
                        why.push(format!("rejected by the collector: {}", msg_of(&resp)));
                    }
                    if undecodable > 0 {
                        why.push(format!("{undecodable} unreadable in the outbox"));
                    }
                    fdr_proto::v1::OutboxGap {
                        records: lost,
                        first_serial: batch.items.first().map_or(0, |q| q.serial),
                        last_serial: up_to,
                        first_time: first.map(crate::outbox::ts),
                        last_time: last.filter(|&t| t > 0).map(crate::outbox::ts),
                        reason: why.join("; "),
                        ..Default::default()
                    }
                });
                let gapped = gap.is_some();
                let o = outbox.clone();
                match blocking(&db, true, move |d| o.ack_with_gap(d, up_to, gap.clone())).await {
                    Ok(()) => {
                        if gapped {
                            m.gaps.fetch_add(1, Relaxed);
                        }
                        m.sent.fetch_add(n - rejected, Relaxed);
                        backoff = cfg.backoff_initial;
                        shrink = shrink.saturating_sub(1);
                        continue;
                    }
                    Err(e) => {
                        // Sent, not done: sent again (counted as retried)
                        // once the disk takes writes.
                        m.set_error(e.to_string());
                        tracing::warn!(err = %e, "export outbox: acknowledging a sent batch failed");
                        let d = jitter(backoff / 2, backoff);
                        backoff = (backoff * 2).min(cfg.backoff_max);
                        d
                    }
                }
            }
            Err(status) => {
                m.failures.fetch_add(1, Relaxed);
                let code = status.code();
                m.set_error(format!("{code:?}: {}", status.message()));
                if retryable(code) {
                    let asked = (code == Code::ResourceExhausted)
                        .then(|| retry_delay(&status))
                        .flatten();
                    let d = match asked {
                        // Honoured, within sane bounds: never sooner than
                        // backoff_initial (a collector asking for 0s would
                        // be hammered), never later than RETRY_INFO_MAX; a
                        // little later (up to 5%, at most 1s) so that a
                        // fleet told the same delay does not come back in
                        // the same instant.
                        Some(d) => {
                            let d = d.clamp(cfg.backoff_initial, RETRY_INFO_MAX);
                            jitter(d, d + (d / 20).min(Duration::from_secs(1)))
                        }
                        None => {
                            if code == Code::ResourceExhausted && n > 1 {
                                shrink = (shrink + 1).min(20);
                            }
                            jitter(backoff / 2, backoff)
                        }
                    };
                    backoff = (backoff * 2).min(cfg.backoff_max);
                    tracing::debug!(?code, message = %status.message(), delay_ms = d.as_millis() as u64,
                        "OTLP export failed; retrying");
                    d
                } else {
                    if last_loud.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        last_loud = Some(Instant::now());
                        tracing::error!(?code, message = %status.message(), records = n,
                            "the collector refused the export (not retryable): the records stay \
                             in the outbox; check export.otlp (endpoint, token, TLS)");
                    }
                    cfg.backoff_max
                }
            }
        };
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_info_is_read_from_the_status_details() {
        let info = RetryInfo {
            retry_delay: Some(prost_types::Duration {
                seconds: 2,
                nanos: 500_000_000,
            }),
        };
        let st = RpcStatus {
            code: Code::ResourceExhausted as i32,
            message: "slow down".into(),
            details: vec![prost_types::Any {
                type_url: RETRY_INFO_TYPE.into(),
                value: info.encode_to_vec(),
            }],
        };
        let status = Status::with_details(
            Code::ResourceExhausted,
            "slow down",
            st.encode_to_vec().into(),
        );
        assert_eq!(retry_delay(&status), Some(Duration::from_millis(2500)));
        assert_eq!(retry_delay(&Status::unavailable("x")), None);
        assert!(retryable(Code::ResourceExhausted) && retryable(Code::DataLoss));
        assert!(!retryable(Code::Unauthenticated) && !retryable(Code::InvalidArgument));
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(1), Duration::from_secs(3));
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(3));
        }
    }
}
