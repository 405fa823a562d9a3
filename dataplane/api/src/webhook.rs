//! Webhooks: every status change and inbound message of an app is POSTed
//! as JSON to the app's webhook URL, signed with HMAC-SHA256, retried with
//! exponential backoff. Delivery runs off the send path.
//!
//! Webhook URLs are chosen by tenants, so delivery must not become a way
//! into the gateway's network: the address actually connected to is
//! checked when it is resolved (a name resolving to 127.0.0.1 or the
//! metadata service is refused, not only such URL text), redirects are
//! not followed, and no proxy from the environment is used. Private,
//! loopback and link-local targets are allowed only with
//! `--webhook-allow-private` or for an app an admin allowed.
//!
//! The signing secret is not stored: the record keeps a random nonce and
//! the id of the JWT key the secret is derived from
//! ([`crate::auth::Auth::webhook_secret`]).

use crate::auth::Caller;
use crate::send::AppEvent;
use crate::{ApiError, ApiState};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Header carrying `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-smsgw-signature";
/// Header carrying the Unix timestamp (seconds) that was signed.
pub const TIMESTAMP_HEADER: &str = "x-smsgw-timestamp";

/// Delivery attempts per event (first try included).
const ATTEMPTS: u32 = 5;
/// Deliveries in flight at once; beyond it events wait.
const IN_FLIGHT: usize = 256;

/// The signature a receiver recomputes to trust a webhook body.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(71);
    hex.push_str("sha256=");
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// `PUT /api/v1/settings/webhook` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// `http(s)://…` URL; `null` or empty removes the webhook.
    pub url: Option<String>,
}

/// The webhook as set; the secret is shown only here.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookSet {
    /// The URL, if any.
    pub url: Option<String>,
    /// Signing secret (new each time the webhook is set).
    pub secret: Option<String>,
}

/// Sets (or removes) the calling app's webhook and issues a new secret.
pub async fn set(
    state: &ApiState,
    caller: &Caller,
    settings: WebhookSettings,
) -> Result<WebhookSet, ApiError> {
    let Caller::User { user_id, .. } = caller else {
        return Err(ApiError::PermissionDenied(
            "webhooks belong to a user's app".into(),
        ));
    };
    let url = settings.url.filter(|u| !u.trim().is_empty());
    if let Some(u) = &url
        && (!(u.starts_with("http://") || u.starts_with("https://"))
            || u.len() > 2048
            || reqwest::Url::parse(u).is_err())
    {
        return Err(ApiError::InvalidField {
            field: "url",
            reason: "must be an http:// or https:// URL".into(),
        });
    }
    let mut user = state
        .auth
        .store()
        .get(user_id)
        .await?
        .ok_or_else(|| ApiError::Unauthenticated("the token's user no longer exists".into()))?;
    if let Some(u) = &url
        && let Some(ip) = literal_ip(u)
        && !crate::net::is_public(ip)
        && !(state.webhook_allow_private || user.webhook_allow_private)
    {
        return Err(ApiError::InvalidField {
            field: "url",
            reason: format!(
                "{ip} is a private, loopback, link-local or reserved address; webhooks must reach a public address"
            ),
        });
    }
    let (stored, secret) = match &url {
        Some(_) => {
            let (stored, secret) = state.auth.new_webhook_secret(&user.user_id);
            (Some(stored), Some(secret))
        }
        None => (None, None),
    };
    user.webhook_url = url.clone();
    user.webhook_secret = stored;
    state.auth.store().update(&user).await?;
    tracing::info!(user_id = %user.user_id, set = url.is_some(), "webhook settings changed");
    Ok(WebhookSet { url, secret })
}

struct Target {
    url: String,
    secret: String,
    /// May reach private addresses.
    private: bool,
}

/// The IP address a URL names literally (no resolution happens for those,
/// so they are checked here).
fn literal_ip(url: &str) -> Option<IpAddr> {
    // The URL parser normalises IPv4 spellings (`2130706433`, `0x7f.1`)
    // to dotted quads and keeps IPv6 in brackets.
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Resolves webhook hosts and keeps only public addresses, so the check
/// applies to the address connected to, whatever the name said.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| crate::net::is_public(a.ip()))
                .collect();
            if public.is_empty() {
                tracing::warn!(host, resolved = ?all, "webhook target refused: the name resolves only to private, loopback or link-local addresses");
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{host} resolves only to non-public addresses"),
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The webhook HTTP client: no redirects, no proxy from the environment,
/// and with `public_only` the resolver that refuses non-public addresses.
pub fn client(public_only: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    let b = if public_only {
        b.dns_resolver(Arc::new(PublicOnly))
    } else {
        b
    };
    b.build().expect("TLS-free client builds")
}

/// Delivers every app event to its app's webhook until `cancel` fires.
pub async fn run(state: ApiState, cancel: CancellationToken) {
    let mut rx = state.messages.subscribe();
    let (public, any) = (client(true), client(false));
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut cache: HashMap<String, (Option<Arc<Target>>, Instant)> = HashMap::new();
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            () = cancel.cancelled() => return,
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    skipped = n,
                    "webhook dispatcher fell behind; events were not delivered"
                );
                continue;
            }
            Err(_) => return,
        };
        let app = ev.app_id().to_owned();
        let target = match cache.get(&app) {
            Some((t, at)) if at.elapsed() < Duration::from_secs(5) => t.clone(),
            _ => {
                let t = match state.auth.store().by_app_id(&app).await {
                    Ok(Some(u)) => match (&u.webhook_url, &u.webhook_secret) {
                        (Some(url), Some(stored)) => {
                            match state.auth.webhook_secret(&u.user_id, stored) {
                                Some(secret) => Some(Arc::new(Target {
                                    url: url.clone(),
                                    secret,
                                    private: state.webhook_allow_private || u.webhook_allow_private,
                                })),
                                None => {
                                    tracing::warn!(app_id = %app, "webhook secret derived from a retired JWT key; the app must set its webhook again");
                                    None
                                }
                            }
                        }
                        _ => None,
                    },
                    _ => None,
                };
                cache.insert(app, (t.clone(), Instant::now()));
                t
            }
        };
        let Some(target) = target else { continue };
        if !target.private
            && let Some(ip) = literal_ip(&target.url)
            && !crate::net::is_public(ip)
        {
            tracing::warn!(app_id = %app_of(&ev), %ip, "webhook target refused: not a public address");
            continue;
        }
        let http = if target.private {
            any.clone()
        } else {
            public.clone()
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let cancel = cancel.clone();
        tokio::spawn(async move {
            deliver(&http, &target, &ev, &cancel).await;
            drop(permit);
        });
    }
}

fn app_of(ev: &AppEvent) -> &str {
    ev.app_id()
}

async fn deliver(
    http: &reqwest::Client,
    target: &Target,
    ev: &AppEvent,
    cancel: &CancellationToken,
) {
    let body = serde_json::to_vec(ev).expect("events serialise");
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        let ts = smsgw_core::unix_now();
        let r = http
            .post(&target.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sign(&target.secret, ts, &body))
            .body(body.clone())
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => return,
            Ok(resp) if resp.status().is_redirection() => {
                tracing::warn!(app_id = ev.app_id(), status = %resp.status(), "webhook answered a redirect; redirects are not followed");
                return;
            }
            Ok(resp) => tracing::debug!(status = %resp.status(), attempt, "webhook refused"),
            Err(e) => tracing::debug!(error = %e, attempt, "webhook unreachable"),
        }
        if attempt == ATTEMPTS {
            tracing::warn!(
                app_id = ev.app_id(),
                "webhook delivery abandoned after {ATTEMPTS} attempts"
            );
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return,
        }
        delay *= 2;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let a = super::sign("k", 1, b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 71);
        assert_ne!(a, super::sign("k", 2, b"{}"));
        assert_ne!(a, super::sign("k", 1, b"{ }"));
        assert_ne!(a, super::sign("j", 1, b"{}"));
    }
}
