//! Pushing each operator's events to its webhook (HOST-7): delivered at
//! least once, in order, while polling goes on as before.
//!
//! A task of the service reads the operator's events after the cursor of
//! consumer [`WEBHOOK_CONSUMER`], posts them as one JSON batch
//! `{"operator", "events": [...]}` to the webhook's URL and, on a 2xx
//! answer, moves the cursor past them. Any other answer, a refused
//! connection or no answer within [`TIMEOUT`] leaves the cursor where it
//! was: the same events are posted again after a back-off of 1 s, doubling
//! up to [`MAX_BACKOFF`]. Since the cursor is in the store, a restart goes
//! on where the last acknowledged batch ended; a batch posted but not
//! acknowledged before a crash is posted again, so receivers deduplicate by
//! `seq`.
//!
//! Every post carries `X-Rulehost-Signature: sha256=HEX`, the HMAC-SHA256
//! of the exact body under the webhook's secret, and
//! `X-Rulehost-Delivery: FIRST-LAST`, the batch's first and last `seq`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{Request, Uri, header};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Host;
use crate::error::{Error, Result};
use crate::store::{WEBHOOK_CONSUMER, Webhook};

/// Events posted at most in one batch.
const BATCH: usize = 100;

/// How long a post may take before it counts as failed.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait between two attempts after failures in a row.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The header with the body's signature.
pub const SIGNATURE_HEADER: &str = "x-rulehost-signature";

/// The header naming the batch's first and last `seq`.
pub const DELIVERY_HEADER: &str = "x-rulehost-delivery";

/// Checks that the service can post to `url`: `http://HOST[:PORT]/PATH`.
///
/// # Errors
///
/// [`Error::InvalidWebhook`] naming the URL and the problem.
pub fn check_url(url: &str) -> Result<()> {
    let refuse = |reason: &str| Error::InvalidWebhook {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|_| refuse("not a URL such as `http://HOST[:PORT]/PATH`"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(refuse(
                "this build posts plain `http://` only; put a TLS proxy on the way to an `https://` endpoint",
            ));
        }
        _ => return Err(refuse("expected `http://HOST[:PORT]/PATH`")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(refuse("it names no host"));
    }
    Ok(())
}

/// `sha256=HEX`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", crate::audit::hex(&mac.finalize().into_bytes()))
}

/// How an operator's webhook is doing, as this service saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryStatus {
    /// The last `seq` the endpoint acknowledged since the service started.
    pub delivered_through: Option<u64>,
    /// Failed posts in a row.
    pub failures: u32,
    /// Why the last post failed, while it is failing.
    pub last_error: Option<String>,
    /// Seconds until the next attempt, while it is failing.
    pub retry_in_seconds: Option<u64>,
}

/// The delivery task's state, shared with the handlers that report it.
#[derive(Default)]
pub(super) struct Deliveries {
    status: Mutex<BTreeMap<String, (DeliveryStatus, Option<Instant>)>>,
}

impl Deliveries {
    /// The operator's delivery status; the default before any attempt.
    pub(super) fn status(&self, operator: &str) -> DeliveryStatus {
        let status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((status, retry_at)) = status.get(operator) else {
            return DeliveryStatus::default();
        };
        DeliveryStatus {
            retry_in_seconds: retry_at.map(|at| {
                at.saturating_duration_since(Instant::now())
                    .as_secs_f64()
                    .ceil() as u64
            }),
            ..status.clone()
        }
    }

    /// Whether the operator waits for its back-off to end; when it does,
    /// the time it ends.
    fn backing_off(&self, operator: &str) -> Option<Instant> {
        let status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status
            .get(operator)
            .and_then(|(_, retry_at)| *retry_at)
            .filter(|at| *at > Instant::now())
    }

    fn forget(&self, operator: &str) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.remove(operator);
    }

    fn record(&self, operator: &str, outcome: &std::result::Result<Option<u64>, String>) {
        if !matches!(outcome, Ok(None)) {
            super::telemetry::webhook_post(operator, outcome.is_ok());
        }
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let (status, retry_at) = status.entry(operator.to_owned()).or_default();
        match outcome {
            Ok(delivered) => {
                if delivered.is_some() {
                    status.delivered_through = *delivered;
                }
                status.failures = 0;
                status.last_error = None;
                *retry_at = None;
            }
            Err(error) => {
                status.failures += 1;
                status.last_error = Some(error.clone());
                *retry_at = Some(Instant::now() + backoff(status.failures));
            }
        }
    }
}

/// The wait after `failures` failed posts in a row: 1 s, doubling, at most
/// [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

/// Delivers every operator's events until `stopping` turns true or its
/// sender is dropped. Looks again whenever this host writes events, and
/// every `poll` for what other processes wrote and for webhooks set
/// elsewhere. Each operator's post runs on its own, so a slow endpoint
/// holds up only its own operator.
pub(super) async fn run(
    host: Arc<Host>,
    deliveries: Arc<Deliveries>,
    mut stopping: watch::Receiver<bool>,
    poll: Duration,
) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut written = host.watch_events();
    let mut posts = JoinSet::new();
    // The operator of each post in flight, by task.
    let mut in_flight: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut webhooks: Vec<Webhook> = Vec::new();
    // Look at every webhook (at start, on new events, on `poll`), or at the
    // one operator whose post just delivered, for what came meanwhile.
    let mut look_all = true;
    let mut look_at: Option<String> = None;
    let mut wake = Instant::now();
    loop {
        if look_all {
            wake = Instant::now() + poll;
            let lookup = Arc::clone(&host);
            match tokio::task::spawn_blocking(move || lookup.webhooks()).await {
                Ok(Ok(found)) => {
                    // A webhook set anew starts without the old one's
                    // back-off: its URL may be the fix.
                    for webhook in &found {
                        if !webhooks.contains(webhook) {
                            deliveries.forget(&webhook.operator);
                        }
                    }
                    webhooks = found;
                }
                Ok(Err(error)) => eprintln!("warning: webhooks: {error}"),
                Err(error) => eprintln!("warning: webhooks: {error}"),
            }
        }
        for webhook in &webhooks {
            let wanted = look_all || look_at.as_deref() == Some(webhook.operator.as_str());
            if !wanted || in_flight.values().any(|busy| *busy == webhook.operator) {
                continue;
            }
            if let Some(at) = deliveries.backing_off(&webhook.operator) {
                wake = wake.min(at);
                continue;
            }
            let post = posts.spawn(deliver(Arc::clone(&host), client.clone(), webhook.clone()));
            in_flight.insert(post.id(), webhook.operator.clone());
        }
        (look_all, look_at) = (false, None);
        tokio::select! {
            Some(posted) = posts.join_next_with_id(), if !posts.is_empty() => {
                let (id, outcome) = posted
                    .unwrap_or_else(|error| (error.id(), Err(format!("the post failed: {error}"))));
                let Some(operator) = in_flight.remove(&id) else { continue };
                deliveries.record(&operator, &outcome);
                match (outcome, deliveries.backing_off(&operator)) {
                    (_, Some(at)) => wake = wake.min(at),
                    (Ok(Some(_)), None) => look_at = Some(operator),
                    _ => {}
                }
            }
            _ = written.changed() => look_all = true,
            () = tokio::time::sleep_until(wake.into()) => look_all = true,
            stopped = stopping.wait_for(|stopping| *stopping) => {
                let _ = stopped;
                return;
            }
        }
    }
}

/// Posts the next batch of the operator's events. Returns the last `seq`
/// delivered (`None`: nothing was waiting) or why the post failed.
async fn deliver(
    host: Arc<Host>,
    client: Client<HttpConnector, Full<Bytes>>,
    webhook: Webhook,
) -> std::result::Result<Option<u64>, String> {
    let read = Arc::clone(&host);
    let operator = webhook.operator.clone();
    let events =
        tokio::task::spawn_blocking(move || read.events(&operator, WEBHOOK_CONSUMER, BATCH))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(None);
    };
    let (first, last) = (first.seq, last.seq);
    let body = json!({ "operator": webhook.operator, "events": events }).to_string();
    let request = Request::post(&webhook.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            SIGNATURE_HEADER,
            signature(&webhook.secret, body.as_bytes()),
        )
        .header(DELIVERY_HEADER, format!("{first}-{last}"))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot post to `{}`: {e}", webhook.url))?;
    let answer = tokio::time::timeout(TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("`{}` did not answer within {TIMEOUT:?}", webhook.url))?
        .map_err(|e| format!("cannot post to `{}`: {e}", webhook.url))?;
    if !answer.status().is_success() {
        return Err(format!(
            "`{}` answered {} to events {first}-{last}",
            webhook.url,
            answer.status()
        ));
    }
    let operator = webhook.operator.clone();
    tokio::task::spawn_blocking(move || host.ack(&operator, WEBHOOK_CONSUMER, last))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(Some(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_other_than_plain_http_to_a_host_are_refused_naming_them() {
        assert!(check_url("http://127.0.0.1:9000/hooks/rulehost").is_ok());
        for (url, reason) in [
            (
                "https://crm.example/hooks",
                "this build posts plain `http://` only",
            ),
            (
                "ftp://crm.example/hooks",
                "expected `http://HOST[:PORT]/PATH`",
            ),
            ("crm.example/hooks", "not a URL"),
            ("http://", "not a URL"),
            ("not a url", "not a URL"),
        ] {
            let error = check_url(url).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("invalid webhook URL `{url}`: {reason}")),
                "{error}"
            );
        }
    }

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_backoff_doubles_from_one_second_up_to_five_minutes() {
        let waits: Vec<u64> = [1, 2, 3, 9, 10, 40].map(|n| backoff(n).as_secs()).to_vec();
        assert_eq!(waits, [1, 2, 4, 256, 300, 300]);
    }
}
