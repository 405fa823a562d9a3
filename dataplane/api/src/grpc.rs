//! gRPC services on tonic: `sms.v1.SmsService`, `auth.v1.AuthService` and
//! `admin.v1.AdminService`. Each call turns its metadata into headers and
//! authenticates exactly as REST does.

use crate::admin::{self, UserUpdate, UserView};
use crate::auth::Access::{self, Admin, Any, User};
use crate::auth::{Caller, IssuedToken};
use crate::{ApiError, ApiState};
use smsgw_core::links::{LinkAction, LinkView};
use smsgw_core::messages::MessageStatus;
use smsgw_proto::admin::v1 as admin_pb;
use smsgw_proto::auth::v1 as auth_pb;
use smsgw_proto::sms::v1 as pb;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Bounds the server streams (`SendMessageStream`, `WatchEvents`) one
/// user holds open at once, so one tenant cannot pin unbounded tasks and
/// buffers.
pub struct StreamSlots {
    max: usize,
    open: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl StreamSlots {
    /// At most `max` open streams per user.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: std::sync::Mutex::default(),
        }
    }

    /// A slot for one more stream of `caller`, released when dropped.
    fn open(self: &Arc<Self>, caller: &Caller) -> Result<StreamSlot, ApiError> {
        let key = match caller {
            Caller::User { user_id, .. } => user_id.clone(),
            Caller::AdminKey => "admin-key".to_owned(),
        };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key.clone()).or_default();
        if *n >= self.max {
            return Err(ApiError::TooManyRequests {
                retry_after_secs: 1,
            });
        }
        *n += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            key,
        })
    }
}

/// One open stream's place in [`StreamSlots`].
struct StreamSlot {
    slots: Arc<StreamSlots>,
    key: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A response stream holding its [`StreamSlot`] until tonic drops it
/// (the call ended or the client went away).
struct Slotted<T> {
    inner: BoxStream<T>,
    _slot: StreamSlot,
}

impl<T> Stream for Slotted<T> {
    type Item = Result<T, Status>;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

fn slotted<T: Send + 'static>(slot: StreamSlot, inner: BoxStream<T>) -> BoxStream<T> {
    Box::pin(Slotted { inner, _slot: slot })
}

/// Counts a finished call and converts its error.
fn finish<T>(
    state: &ApiState,
    method: &str,
    r: Result<T, ApiError>,
) -> Result<Response<T>, Status> {
    let r = r.map(Response::new).map_err(Status::from);
    state.metrics.observe_grpc(method, &r);
    r
}

impl ApiState {
    /// Authenticates a gRPC call as `access` asks, runs `f` on the caller
    /// and the request's message, and [`finish`]es the call as `method`.
    async fn call<Q, T, F>(
        &self,
        access: Access,
        method: &str,
        req: Request<Q>,
        f: impl FnOnce(Caller, Q) -> F,
    ) -> Result<Response<T>, Status>
    where
        F: Future<Output = Result<T, ApiError>>,
    {
        let headers = req.metadata().clone().into_headers();
        let r = match self.auth.authorize(access, &headers).await {
            Ok(caller) => f(caller, req.into_inner()).await,
            Err(e) => Err(e),
        };
        finish(self, method, r)
    }
}

/// The client address of a call: the peer, or behind a trusted proxy the
/// address in its `x-forwarded-for` metadata.
fn client_ip<T>(state: &ApiState, req: &Request<T>) -> Option<std::net::IpAddr> {
    let headers = req.metadata().clone().into_headers();
    state
        .auth
        .client_addr(req.remote_addr().map(|a| a.ip()), &headers)
}

fn timestamp(unix: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: unix as i64,
        nanos: 0,
    }
}

/// The `sms.v1.SmsService` implementation.
#[derive(Clone)]
pub struct SmsGrpc {
    state: ApiState,
}

impl SmsGrpc {
    /// A service over the shared API state.
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }

    /// The tonic server for this service, with the API's message size limit.
    pub fn into_server(self) -> pb::sms_service_server::SmsServiceServer<Self> {
        pb::sms_service_server::SmsServiceServer::new(self)
            .max_decoding_message_size(crate::MAX_GRPC_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl pb::sms_service_server::SmsService for SmsGrpc {
    async fn send_message(
        &self,
        req: Request<pb::SmsRequest>,
    ) -> Result<Response<pb::SmsResponse>, Status> {
        let trace = crate::trace::from_metadata("sms.v1.SmsService/SendMessage", req.metadata());
        if !self.state.compat_platform_responses {
            return self
                .state
                .call(User, "SendMessage", req, |caller, m| async move {
                    let req = send_request(&caller, m)?;
                    crate::send::send(&self.state, &caller, req, trace)
                        .await
                        .map(sms_response)
                })
                .await;
        }
        // As the platform answered: a send refused after authentication is
        // an `SmsResponse` with `success: false` and status OK (counted as
        // the error it is); failed authentication stays a gRPC status.
        let headers = req.metadata().clone().into_headers();
        let caller = match self.state.auth.authorize(User, &headers).await {
            Ok(c) => c,
            Err(e) => return finish(&self.state, "SendMessage", Err(e)),
        };
        let m = req.into_inner();
        let (esme, transaction_id) = (m.esme.clone(), m.transaction_id.clone());
        let r = match send_request(&caller, m) {
            Ok(req) => crate::send::send(&self.state, &caller, req, trace).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(ok) => finish(&self.state, "SendMessage", Ok(sms_response(ok))),
            Err(e) => {
                let resp = refused_response(&e, esme, transaction_id);
                let status: Result<(), Status> = Err(Status::from(e));
                self.state.metrics.observe_grpc("SendMessage", &status);
                Ok(Response::new(resp))
            }
        }
    }

    type SendMessageStreamStream = BoxStream<pb::SmsResponse>;

    async fn send_message_stream(
        &self,
        req: Request<Streaming<pb::SmsRequest>>,
    ) -> Result<Response<Self::SendMessageStreamStream>, Status> {
        // The stream's metadata carries one client context; each message
        // gets its own span below it.
        let client = crate::trace::client_context(req.metadata());
        self.state
            .call(User, "SendMessageStream", req, |caller, m| async move {
                let slot = self.state.streams.open(&caller)?;
                let stream = spawn_send_stream(self.state.clone(), caller, client, m);
                Ok(slotted(slot, Box::pin(stream)))
            })
            .await
    }

    async fn check_esme(
        &self,
        req: Request<pb::CheckEsmeRequest>,
    ) -> Result<Response<pb::CheckEsmeResponse>, Status> {
        self.state
            .call(User, "CheckESME", req, |_, b| async move {
                let links = crate::links::check_esme(&self.state, Some(&b.esme))?;
                Ok(pb::CheckEsmeResponse {
                    links: links.into_iter().map(link_state_pb).collect(),
                })
            })
            .await
    }

    async fn check_text_len(
        &self,
        req: Request<pb::CheckTextLenRequest>,
    ) -> Result<Response<pb::CheckTextLenResponse>, Status> {
        self.state
            .call(User, "CheckTextLen", req, |_, b| async move {
                let r = crate::text::check_text_len(
                    &self.state.config.load(),
                    Some(&b.message),
                    Some(&b.esme),
                )?;
                self.state.metrics.observe_encoding(&r.encoding);
                Ok(pb::CheckTextLenResponse {
                    encoding: r.encoding,
                    characters: r.characters,
                    units: r.units,
                    segments: r.segments,
                    per_segment: r.per_segment,
                    utf16_units: r.utf16_units,
                    graphemes: r.graphemes,
                    national_locking: r.national_locking.unwrap_or_default(),
                    national_single: r.national_single.unwrap_or_default(),
                    concatenation: r.concatenation,
                    split_by_smsc: r.split_by_smsc,
                    parts: r
                        .parts
                        .into_iter()
                        .map(|p| pb::TextPart {
                            characters: p.characters,
                            graphemes: p.graphemes,
                            units: p.units,
                        })
                        .collect(),
                })
            })
            .await
    }

    async fn sms_info(
        &self,
        req: Request<pb::SmsInfoRequest>,
    ) -> Result<Response<pb::SmsInfoResponse>, Status> {
        // Admins may look any message up by id with the admin key.
        self.state
            .call(Any, "SmsInfo", req, |caller, b| async move {
                let v = crate::send::info(
                    &self.state,
                    &caller,
                    Some(&b.message_id),
                    Some(&b.transaction_id),
                )
                .await?;
                Ok(pb::SmsInfoResponse {
                    message_id: v.message_id,
                    transaction_id: v.transaction_id,
                    status: status_pb(v.status) as i32,
                    esme: v.esme,
                    link: v.link.unwrap_or_default(),
                    saddr: v.source,
                    daddr: v.destination,
                    encoding: v.encoding,
                    segments: v.segments.into_iter().map(segment_pb).collect(),
                    created_at: Some(millis_timestamp(v.created_at_ms)),
                    updated_at: Some(millis_timestamp(v.updated_at_ms)),
                    task_id: v.task_id.unwrap_or_default(),
                    sent_at: v.sent_at_ms.map(millis_timestamp),
                    validity_period: v.validity_period.unwrap_or(0),
                    schedule_delivery_time: v.schedule_delivery_time_ms.map(millis_timestamp),
                    schedule_at_smsc: v.schedule_at_smsc,
                    priority: v.priority.into(),
                    flash: v.flash,
                })
            })
            .await
    }

    type WatchEventsStream = BoxStream<pb::MessageEvent>;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.state.call(User, "WatchEvents", req, |caller, w| async move {
            let Caller::User { app_id, .. } = &caller else {
                return Err(ApiError::PermissionDenied("watching events needs a user's token".into()));
            };
            if let Some(after) = w.after {
                // Check the cursor before the stream opens.
                crate::events::page(&self.state, app_id, Some(&after), 1).await?;
                let slot = self.state.streams.open(&caller)?;
                let stream = resume_events(self.state.clone(), app_id.clone(), after);
                return Ok(slotted(slot, Box::pin(stream)));
            }
            let slot = self.state.streams.open(&caller)?;
            let app_id = app_id.clone();
            let rx = self.state.messages.subscribe();
            let stream = tokio_stream::StreamExt::filter_map(
                tokio_stream::wrappers::BroadcastStream::new(rx),
                move |ev| match ev {
                    Ok(ev) if ev.app_id() == app_id => Some(Ok(event_pb(ev))),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "event watcher fell behind; events were skipped");
                        None
                    }
                },
            );
            Ok(slotted(slot, Box::pin(stream)))
        })
        .await
    }

    async fn claim_address(
        &self,
        req: Request<pb::ClaimAddressRequest>,
    ) -> Result<Response<pb::AddressClaim>, Status> {
        self.state
            .call(User, "ClaimAddress", req, |caller, b| async move {
                let req = crate::claims::ClaimRequest {
                    address: Some(b.address),
                    keyword: Some(b.keyword).filter(|k| !k.is_empty()),
                };
                crate::claims::claim(&self.state, &caller, req)
                    .await
                    .map(claim_pb)
            })
            .await
    }

    async fn list_address_claims(
        &self,
        req: Request<pb::ListAddressClaimsRequest>,
    ) -> Result<Response<pb::ListAddressClaimsResponse>, Status> {
        self.state
            .call(User, "ListAddressClaims", req, |caller, _| async move {
                let l = crate::claims::list_own(&self.state, &caller).await?;
                Ok(pb::ListAddressClaimsResponse {
                    claims: l.claims.into_iter().map(claim_pb).collect(),
                })
            })
            .await
    }

    async fn release_address(
        &self,
        req: Request<pb::ReleaseAddressRequest>,
    ) -> Result<Response<pb::ReleaseAddressResponse>, Status> {
        self.state
            .call(User, "ReleaseAddress", req, |caller, b| async move {
                let c = crate::claims::release(&self.state, &caller, &b.claim_id).await?;
                Ok(pb::ReleaseAddressResponse {
                    claim: Some(claim_pb(c)),
                })
            })
            .await
    }
}

/// An address claim as `sms.v1` and `admin.v1` carry it.
fn claim_pb(c: crate::claims::ClaimView) -> pb::AddressClaim {
    pb::AddressClaim {
        claim_id: c.claim_id,
        address: c.address,
        kind: c.kind.as_str().into(),
        keyword: c.keyword.unwrap_or_default(),
        app_id: c.app_id,
        status: c.status.as_str().into(),
        created_at: Some(timestamp(c.created_at)),
        approved_at: c.approved_at.map(timestamp),
    }
}

/// WatchEvents from a cursor: the app's kept events after it, then each
/// new one, read from the outbox's log (woken by the live events), each
/// with its cursor and id.
fn resume_events(
    state: ApiState,
    app_id: String,
    after: String,
) -> tokio_stream::wrappers::ReceiverStream<Result<pb::MessageEvent, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        let mut live = state.messages.subscribe();
        let mut cursor = after;
        loop {
            let got = match crate::events::page(&state, &app_id, Some(&cursor), 500).await {
                Ok(g) => g,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            if got.is_empty() {
                // Wait for news (any app's: cheap to re-read), at most 1 s.
                tokio::select! {
                    _ = live.recv() => {}
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    () = tx.closed() => return,
                }
                continue;
            }
            for l in got {
                cursor = l.cursor.clone();
                let Ok(ev) = serde_json::from_str::<crate::send::AppEvent>(&l.body) else {
                    continue;
                };
                let event_id = serde_json::from_str::<serde_json::Value>(&l.body)
                    .ok()
                    .and_then(|v| v["event_id"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let mut pb = event_pb(ev);
                pb.cursor = l.cursor;
                pb.event_id = event_id;
                if tx.send(Ok(pb)).await.is_err() {
                    return;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Handles the messages of one SendMessageStream, up to
/// [`STREAM_IN_FLIGHT`] at once, and streams back their answers.
fn spawn_send_stream(
    state: ApiState,
    caller: Caller,
    client: opentelemetry::Context,
    mut inbound: Streaming<pb::SmsRequest>,
) -> tokio_stream::wrappers::ReceiverStream<Result<pb::SmsResponse, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_IN_FLIGHT);
    let permits = Arc::new(tokio::sync::Semaphore::new(STREAM_IN_FLIGHT));
    tokio::spawn(async move {
        // Reading waits for a free slot, so a client that sends faster
        // than messages are handled is held back by HTTP/2 flow control
        // instead of growing this server's memory.
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let msg = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(%status, "send stream ended by the client");
                    break;
                }
            };
            let (tx, state, caller) = (tx.clone(), state.clone(), caller.clone());
            let trace = crate::trace::RequestTrace::child_of(
                "sms.v1.SmsService/SendMessageStream",
                &client,
            );
            tokio::spawn(async move {
                let transaction_id = msg.transaction_id.clone();
                let esme = msg.esme.clone();
                let r = match send_request(&caller, msg) {
                    Ok(req) => crate::send::send(&state, &caller, req, trace).await,
                    Err(e) => Err(e),
                };
                state.metrics.recent.record(
                    r.is_err(),
                    r.as_ref().is_err_and(|e| e.http_status().is_server_error()),
                );
                let resp = match r {
                    Ok(ok) => sms_response(ok),
                    Err(e) => refused_response(&e, esme, transaction_id),
                };
                let _ = tx.send(Ok(resp)).await;
                drop(permit);
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Requests handled at once per SendMessageStream.
const STREAM_IN_FLIGHT: usize = 256;

fn send_request(caller: &Caller, m: pb::SmsRequest) -> Result<crate::send::SendRequest, ApiError> {
    if let Caller::User { app_id, .. } = caller
        && !m.app_id.is_empty()
        && &m.app_id != app_id
    {
        return Err(ApiError::Unauthenticated(
            "app_id does not match the x-app-id metadata".into(),
        ));
    }
    let small = |v: u32, field: &'static str| -> Result<Option<u8>, ApiError> {
        match v {
            0 => Ok(None),
            v => u8::try_from(v)
                .map(Some)
                .map_err(|_| ApiError::InvalidField {
                    field,
                    reason: "must be below 256".into(),
                }),
        }
    };
    let opt = |v: Option<u32>, field: &'static str| -> Result<Option<u8>, ApiError> {
        v.map(|v| {
            u8::try_from(v).map_err(|_| ApiError::InvalidField {
                field,
                reason: "must be below 256".into(),
            })
        })
        .transpose()
    };
    Ok(crate::send::SendRequest {
        task_id: m.task_id,
        transaction_id: m.transaction_id,
        esme: m.esme,
        source: m.saddr,
        destination: m.daddr,
        message: Some(m.message),
        ston: small(m.ston, "ston")?,
        snpi: small(m.snpi, "snpi")?,
        dton: opt(m.dton, "dton")?,
        dnpi: opt(m.dnpi, "dnpi")?,
        strategy: m.strategy,
        wait_for_submit: m.wait_for_submit,
        wait_for_capacity: m.wait_for_capacity,
        callback_url: m.callback_url,
        callback_events: (!m.callback_events.is_empty()).then_some(m.callback_events),
        sent_at: m.sent_at.map(|t| crate::send::SentAt::Unix {
            seconds: t.seconds,
            nanos: t.nanos,
        }),
        validity_period: m.validity_period.map(serde_json::Value::from),
        schedule_delivery_time: m.schedule_delivery_time.map(|t| crate::send::SentAt::Unix {
            seconds: t.seconds,
            nanos: t.nanos,
        }),
        priority: m.priority.map(serde_json::Value::from),
        flash: m.flash.then_some(serde_json::Value::Bool(true)),
    })
}

fn status_pb(s: MessageStatus) -> pb::MessageStatus {
    match s {
        MessageStatus::Accepted => pb::MessageStatus::Accepted,
        MessageStatus::Pending => pb::MessageStatus::Pending,
        MessageStatus::Delivered => pb::MessageStatus::Delivered,
        MessageStatus::Failed => pb::MessageStatus::Failed,
        MessageStatus::Rejected => pb::MessageStatus::Rejected,
        MessageStatus::Unknown => pb::MessageStatus::Unknown,
    }
}

fn segment_pb(s: crate::send::SegmentView) -> pb::SegmentInfo {
    pb::SegmentInfo {
        seq: u32::from(s.seq),
        smsc_message_id: s.smsc_message_id.unwrap_or_default(),
        submit_status: s.submit_status,
        receipt_state: s.receipt_state.unwrap_or_default(),
        error_code: s.error_code.unwrap_or(0),
        submitted_at: s.submitted_at_ms.map(millis_timestamp),
        receipt_at: s.receipt_at_ms.map(millis_timestamp),
        reason: s.reason.unwrap_or_default(),
    }
}

/// The answer to a refused send: `success: false`, the reason in `error`
/// and `error_code`, the requested `esme` and `transaction_id`.
fn refused_response(e: &ApiError, esme: String, transaction_id: String) -> pb::SmsResponse {
    pb::SmsResponse {
        success: false,
        error: e.to_string(),
        error_code: e.code().to_owned(),
        esme,
        transaction_id,
        status: pb::MessageStatus::Rejected as i32,
        ..Default::default()
    }
}

fn sms_response(r: crate::send::SendResponse) -> pb::SmsResponse {
    pb::SmsResponse {
        success: r.success,
        error: String::new(),
        esme: r.esme,
        message_id: r.message_id,
        transaction_id: r.transaction_id,
        segments: r.segments,
        status: status_pb(r.status) as i32,
        segment_info: r.segment_info.into_iter().map(segment_pb).collect(),
        error_code: String::new(),
        link: r.link.unwrap_or_default(),
    }
}

fn event_pb(ev: crate::send::AppEvent) -> pb::MessageEvent {
    use crate::send::AppEvent;
    pb::MessageEvent {
        event: Some(match ev {
            AppEvent::Status {
                message_id,
                transaction_id,
                status,
                at_ms,
                ..
            } => pb::message_event::Event::Status(pb::StatusChange {
                message_id,
                transaction_id,
                status: status_pb(status) as i32,
                at: Some(millis_timestamp(at_ms)),
            }),
            AppEvent::MobileOriginated {
                link,
                source,
                destination,
                message,
                at_ms,
                text_error,
                undecoded_payload,
                data_coding,
                incomplete,
                ..
            } => pb::message_event::Event::Mo(pb::MobileOriginated {
                link,
                source,
                destination,
                message,
                received_at: Some(millis_timestamp(at_ms)),
                text_error: text_error.unwrap_or_default(),
                undecoded_payload: undecoded_payload
                    .and_then(|p| {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.decode(p).ok()
                    })
                    .unwrap_or_default(),
                data_coding: u32::from(data_coding),
                incomplete,
            }),
        }),
        cursor: String::new(),
        event_id: String::new(),
    }
}

/// The `auth.v1.AuthService` implementation (no credentials needed).
#[derive(Clone)]
pub struct AuthGrpc {
    state: ApiState,
}

impl AuthGrpc {
    /// A service over the shared API state.
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl auth_pb::auth_service_server::AuthService for AuthGrpc {
    async fn register(
        &self,
        req: Request<auth_pb::RegisterRequest>,
    ) -> Result<Response<auth_pb::RegisterResponse>, Status> {
        let ip = client_ip(&self.state, &req);
        let b = req.into_inner();
        let r = self
            .state
            .auth
            .register_from(&b.email, &b.password, &b.app_name, ip)
            .await
            .map(|r| auth_pb::RegisterResponse {
                user_id: r.user_id,
                app_id: r.app_id,
                app_secret: r.app_secret,
            });
        finish(&self.state, "Register", r)
    }

    async fn login(
        &self,
        req: Request<auth_pb::LoginRequest>,
    ) -> Result<Response<auth_pb::TokenResponse>, Status> {
        let ip = client_ip(&self.state, &req);
        let b = req.into_inner();
        let r = self
            .state
            .auth
            .login(&b.email, &b.password, &b.app_id, ip)
            .await
            .map(token_pb);
        finish(&self.state, "Login", r)
    }

    async fn token(
        &self,
        req: Request<auth_pb::TokenRequest>,
    ) -> Result<Response<auth_pb::TokenResponse>, Status> {
        let ip = client_ip(&self.state, &req);
        let b = req.into_inner();
        let r = self
            .state
            .auth
            .token(&b.app_id, &b.app_secret, ip)
            .await
            .map(token_pb);
        finish(&self.state, "Token", r)
    }
}

fn token_pb(t: IssuedToken) -> auth_pb::TokenResponse {
    auth_pb::TokenResponse {
        token: t.token,
        expires_at: Some(timestamp(t.expires_at)),
    }
}

/// The `admin.v1.AdminService` implementation (admin key or admin user).
#[derive(Clone)]
pub struct AdminGrpc {
    state: ApiState,
}

impl AdminGrpc {
    /// A service over the shared API state.
    pub fn new(state: ApiState) -> Self {
        Self { state }
    }
}

fn millis_timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

fn link_state_pb(l: LinkView) -> pb::LinkState {
    pb::LinkState {
        name: l.name,
        state: l.state,
        sessions_bound: l.sessions_bound,
        sessions_total: l.sessions_total,
        in_flight: l.in_flight,
        last_enquire_link_rtt_ms: l.last_enquire_link_rtt_ms.unwrap_or(0.0),
        last_error: l.last_error.unwrap_or_default(),
        last_error_at: l.last_error_at_ms.map(millis_timestamp),
        submit_rate: l.submit_rate,
        receipt_rate: l.receipt_rate,
    }
}

fn link_pb(l: LinkView) -> admin_pb::Link {
    admin_pb::Link {
        name: l.name,
        state: l.state,
        sessions_bound: l.sessions_bound,
        sessions_total: l.sessions_total,
        in_flight: l.in_flight,
        sessions: l
            .sessions
            .into_iter()
            .map(|s| admin_pb::Session {
                index: s.index,
                state: s.state,
                in_flight: s.in_flight,
                last_enquire_link_rtt_ms: s.last_enquire_link_rtt_ms.unwrap_or(0.0),
                pod: s.pod.unwrap_or_default(),
            })
            .collect(),
        last_error: l.last_error.unwrap_or_default(),
    }
}

fn user_pb(u: UserView) -> admin_pb::User {
    admin_pb::User {
        user_id: u.user_id,
        email: u.email,
        app_id: u.app_id,
        app_name: u.app_name,
        admin: u.admin,
        managed: u.managed_by.is_some(),
        created_at: Some(timestamp(u.created_at)),
        allowed_targets: u.allowed_targets,
        allowed_sender_ids: u.allowed_sender_ids,
        rate: u.rate.unwrap_or(0),
        daily_quota: u.daily_quota.unwrap_or(0),
        monthly_quota: u.monthly_quota.unwrap_or(0),
        prepaid: u.prepaid,
    }
}

#[tonic::async_trait]
impl admin_pb::admin_service_server::AdminService for AdminGrpc {
    async fn list_users(
        &self,
        req: Request<admin_pb::ListUsersRequest>,
    ) -> Result<Response<admin_pb::ListUsersResponse>, Status> {
        self.state
            .call(Admin, "ListUsers", req, |_, b| async move {
                let size = (b.page_size != 0).then_some(b.page_size);
                let page = admin::list_users(&self.state, size, Some(&b.page_token)).await?;
                Ok(admin_pb::ListUsersResponse {
                    users: page.users.into_iter().map(user_pb).collect(),
                    next_page_token: page.next_page_token.unwrap_or_default(),
                })
            })
            .await
    }

    async fn get_user(
        &self,
        req: Request<admin_pb::GetUserRequest>,
    ) -> Result<Response<admin_pb::User>, Status> {
        self.state
            .call(Admin, "GetUser", req, |_, b| async move {
                admin::get_user(&self.state, &b.user_id).await.map(user_pb)
            })
            .await
    }

    async fn update_user(
        &self,
        req: Request<admin_pb::UpdateUserRequest>,
    ) -> Result<Response<admin_pb::User>, Status> {
        self.state
            .call(Admin, "UpdateUser", req, |caller, b| async move {
                let update = UserUpdate {
                    app_name: b.app_name,
                    rate: b.rate,
                    allowed_targets: b.set_allowed_targets.then_some(b.allowed_targets),
                    admin: None,
                    webhook_allow_private: None,
                    daily_quota: b.daily_quota,
                    monthly_quota: b.monthly_quota,
                    prepaid: b.prepaid,
                };
                admin::update_user(&self.state, &caller, &b.user_id, update)
                    .await
                    .map(user_pb)
            })
            .await
    }

    async fn delete_user(
        &self,
        req: Request<admin_pb::DeleteUserRequest>,
    ) -> Result<Response<admin_pb::DeleteUserResponse>, Status> {
        self.state
            .call(Admin, "DeleteUser", req, |caller, b| async move {
                admin::delete_user(&self.state, &caller, &b.user_id).await?;
                Ok(admin_pb::DeleteUserResponse { deleted: true })
            })
            .await
    }

    async fn set_admin(
        &self,
        req: Request<admin_pb::SetAdminRequest>,
    ) -> Result<Response<admin_pb::User>, Status> {
        self.state
            .call(Admin, "SetAdmin", req, |caller, b| async move {
                admin::set_admin(&self.state, &caller, &b.user_id, b.admin)
                    .await
                    .map(user_pb)
            })
            .await
    }

    async fn reset_app_secret(
        &self,
        req: Request<admin_pb::ResetAppSecretRequest>,
    ) -> Result<Response<admin_pb::ResetAppSecretResponse>, Status> {
        self.state
            .call(Admin, "ResetAppSecret", req, |caller, b| async move {
                let r = admin::reset_secret(&self.state, &caller, &b.user_id).await?;
                Ok(admin_pb::ResetAppSecretResponse {
                    app_id: r.app_id,
                    app_secret: r.app_secret,
                })
            })
            .await
    }

    async fn top_up_balance(
        &self,
        req: Request<admin_pb::TopUpBalanceRequest>,
    ) -> Result<Response<admin_pb::TopUpBalanceResponse>, Status> {
        self.state
            .call(Admin, "TopUpBalance", req, |caller, b| async move {
                let v = admin::top_up(
                    &self.state,
                    &caller,
                    &b.app_id,
                    admin::TopUpRequest {
                        add: b.add,
                        top_up_id: Some(b.top_up_id).filter(|s| !s.is_empty()),
                    },
                )
                .await?;
                Ok(admin_pb::TopUpBalanceResponse {
                    app_id: v.app_id,
                    balance: v.balance,
                    applied: v.applied,
                })
            })
            .await
    }

    async fn list_links(
        &self,
        req: Request<admin_pb::ListLinksRequest>,
    ) -> Result<Response<admin_pb::ListLinksResponse>, Status> {
        self.state
            .call(Admin, "ListLinks", req, |_, _| async move {
                Ok(admin_pb::ListLinksResponse {
                    links: self
                        .state
                        .messages
                        .links()
                        .links()
                        .into_iter()
                        .map(link_pb)
                        .collect(),
                })
            })
            .await
    }

    async fn control_link(
        &self,
        req: Request<admin_pb::ControlLinkRequest>,
    ) -> Result<Response<admin_pb::ControlLinkResponse>, Status> {
        self.state
            .call(Admin, "ControlLink", req, |caller, b| async move {
                let action = match admin_pb::LinkAction::try_from(b.action) {
                    Ok(admin_pb::LinkAction::Start) => LinkAction::Start,
                    Ok(admin_pb::LinkAction::Stop) => LinkAction::Stop,
                    Ok(admin_pb::LinkAction::Restart) => LinkAction::Restart,
                    _ => {
                        return Err(ApiError::InvalidField {
                            field: "action",
                            reason: "must be START, STOP or RESTART".into(),
                        });
                    }
                };
                let view = crate::links::control(&self.state, &caller, &b.name, action).await?;
                Ok(admin_pb::ControlLinkResponse {
                    link: Some(link_pb(view)),
                })
            })
            .await
    }

    async fn get_config(
        &self,
        req: Request<admin_pb::GetConfigRequest>,
    ) -> Result<Response<admin_pb::GetConfigResponse>, Status> {
        self.state
            .call(Admin, "GetConfig", req, |caller, _| async move {
                let json = admin::config(&self.state, &caller);
                Ok(admin_pb::GetConfigResponse {
                    version: json["version"].as_str().unwrap_or_default().to_owned(),
                    config_json: json.to_string(),
                })
            })
            .await
    }

    async fn get_stats(
        &self,
        req: Request<admin_pb::GetStatsRequest>,
    ) -> Result<Response<admin_pb::GetStatsResponse>, Status> {
        self.state
            .call(Admin, "GetStats", req, |_, _| async move {
                let v = self.state.stats_view();
                let counters = |name: String, c: crate::stats::Counters| admin_pb::Counters {
                    name,
                    submitted: c.submitted,
                    delivered: c.delivered,
                    failed: c.failed,
                    rejected: c.rejected.into_iter().collect(),
                    throughput: c.throughput,
                };
                let conv = |m: std::collections::BTreeMap<String, crate::stats::Counters>| {
                    m.into_iter().map(|(name, c)| counters(name, c)).collect()
                };
                let l = v.limiter;
                Ok(admin_pb::GetStatsResponse {
                    links: conv(v.links),
                    pools: conv(v.pools),
                    apps: conv(v.apps),
                    limiter: Some(admin_pb::LimiterStatus {
                        mode: l.mode,
                        live_pods: l.live_pods.unwrap_or(0),
                        acquires: l.acquires,
                        round_trips: l.round_trips,
                        last_error: l.last_error.unwrap_or_default(),
                    }),
                    pods: v
                        .pods
                        .into_iter()
                        .map(|p| counters(p.pod, p.counters))
                        .collect(),
                })
            })
            .await
    }

    async fn reload_blacklist(
        &self,
        req: Request<admin_pb::ReloadBlacklistRequest>,
    ) -> Result<Response<admin_pb::ReloadBlacklistResponse>, Status> {
        self.state
            .call(Admin, "ReloadBlacklist", req, |caller, b| async move {
                let rep = admin::reload_blacklist(&self.state, &caller, &b.name).await?;
                Ok(admin_pb::ReloadBlacklistResponse {
                    list: rep.list,
                    objects: rep.objects as u64,
                    lines: rep.lines,
                    numbers: rep.numbers,
                    prefixes: rep.prefixes,
                    malformed: rep.malformed,
                    malformed_lines: rep
                        .malformed_lines
                        .into_iter()
                        .map(|m| admin_pb::MalformedLine {
                            object: m.object,
                            line: m.line,
                            content: m.content,
                        })
                        .collect(),
                    elapsed_ms: rep.elapsed_ms,
                })
            })
            .await
    }

    async fn list_address_claims(
        &self,
        req: Request<admin_pb::ListAddressClaimsRequest>,
    ) -> Result<Response<admin_pb::ListAddressClaimsResponse>, Status> {
        self.state
            .call(Admin, "ListAddressClaims", req, |_, b| async move {
                let status = crate::claims::parse_status(&b.status)?;
                let size = (b.page_size != 0).then_some(b.page_size);
                let page =
                    crate::claims::list_all(&self.state, status, size, Some(&b.page_token)).await?;
                Ok(admin_pb::ListAddressClaimsResponse {
                    claims: page.claims.into_iter().map(claim_pb).collect(),
                    next_page_token: page.next_page_token.unwrap_or_default(),
                })
            })
            .await
    }

    async fn approve_address_claim(
        &self,
        req: Request<admin_pb::AddressClaimRequest>,
    ) -> Result<Response<pb::AddressClaim>, Status> {
        self.state
            .call(Admin, "ApproveAddressClaim", req, |caller, b| async move {
                crate::claims::approve(&self.state, &caller, &b.claim_id)
                    .await
                    .map(claim_pb)
            })
            .await
    }

    async fn reject_address_claim(
        &self,
        req: Request<admin_pb::AddressClaimRequest>,
    ) -> Result<Response<pb::AddressClaim>, Status> {
        self.state
            .call(Admin, "RejectAddressClaim", req, |caller, b| async move {
                crate::claims::reject(&self.state, &caller, &b.claim_id)
                    .await
                    .map(claim_pb)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incomplete_mobile_originated_message_says_so_on_the_event_stream() {
        for incomplete in [false, true] {
            let ev = event_pb(crate::send::AppEvent::MobileOriginated {
                app_id: "a".into(),
                link: "l".into(),
                source: "4917".into(),
                destination: "4444".into(),
                message: "first, third".into(),
                at_ms: 1,
                text_error: None,
                undecoded_payload: None,
                data_coding: 8,
                incomplete,
            });
            let Some(pb::message_event::Event::Mo(mo)) = ev.event else {
                panic!("not MO: {ev:?}");
            };
            assert_eq!(
                (mo.message.as_str(), mo.data_coding, mo.incomplete),
                ("first, third", 8, incomplete)
            );
        }
    }
}
