//! OpenTelemetry traces of the message lifecycle. The transports read a
//! client's context through [`extract`] / [`RequestTrace::from_carrier`]
//! with their own [`Extractor`] (HTTP headers, gRPC metadata).
//!
//! Off unless the gateway [`install`]s a tracer (`--otlp-endpoint`): then
//! every span helper here is one `OnceLock` load that finds nothing, and
//! no span is built. What always happens is cheap: a client's W3C
//! `traceparent` (and `tracestate`) header or gRPC metadata entry is read
//! and kept in the message record, so the state-change log lines carry the
//! client's trace id and a gateway that does export can join the trace.
//!
//! Spans of one message (names as exported):
//!
//! - the API call: `POST /api/v1/sms/send`, `sms.v1.SmsService/SendMessage`,
//!   or one `sms.v1.SmsService/SendMessageStream` span per streamed
//!   message (kind server), a child of the client's context;
//!   - `smsgw.rate_limit`, `smsgw.contact_policy` (when a strategy is
//!     named) and `smsgw.persist` below it;
//! - `smsgw.submit` (kind client): the SMPP submission, a child of the API
//!   span (from the context stored in the record, so a sweeper on another
//!   pod joins the same trace), with one `smpp.submit_sm` span per segment;
//! - `smsgw.receipt` (kind consumer): a delivery receipt applied, a child
//!   of the context stored in the record, on whichever pod received it.

pub use opentelemetry::propagation::Extractor;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use smsgw_core::messages::MessageRecord;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::SystemTime;

pub use opentelemetry_sdk::trace::Span;

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Name of the tracer (the instrumentation scope of every span).
pub const SCOPE: &str = "smsgw";

/// Turns span export on for this process, with a tracer of `provider`;
/// false when it was on already.
pub fn install(provider: &SdkTracerProvider) -> bool {
    TRACER.set(provider.tracer(SCOPE)).is_ok()
}

fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// True while spans are exported.
pub fn enabled() -> bool {
    tracer().is_some()
}

/// A stored `traceparent` and `tracestate`.
struct Stored<'a>(&'a str, Option<&'a str>);

impl Extractor for Stored<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.0),
            "tracestate" => self.1,
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The client's context read from a request's carrier (HTTP headers, gRPC
/// metadata): empty (no allocation) without a `traceparent`.
pub fn extract(ex: &dyn Extractor) -> Context {
    if ex.get("traceparent").is_none() {
        return Context::new();
    }
    TraceContextPropagator::new().extract_with_context(&Context::new(), ex)
}

/// The context stored in a message record (see [`RequestTrace::carrier`]).
fn stored(rec: &MessageRecord) -> Option<Context> {
    let tp = rec.traceparent.as_deref()?;
    let cx = extract(&Stored(tp, rec.tracestate.as_deref()));
    cx.span().span_context().is_valid().then_some(cx)
}

/// The trace of one API request that sends a message: the client's
/// context and, while spans are exported, the request's server span.
pub struct RequestTrace {
    cx: Context,
}

impl RequestTrace {
    /// No client context (internal callers, tests); a root span when
    /// exporting.
    pub fn new(name: &'static str) -> Self {
        Self::start(name, Context::new())
    }

    /// The client's context from a request's carrier (HTTP headers, gRPC
    /// metadata; the transport supplies the [`Extractor`]).
    pub fn from_carrier(name: &'static str, carrier: &dyn Extractor) -> Self {
        Self::start(name, extract(carrier))
    }

    /// A request span below an already extracted client context.
    pub fn child_of(name: &'static str, client: &Context) -> Self {
        Self::start(name, client.clone())
    }

    fn start(name: &'static str, parent: Context) -> Self {
        match tracer() {
            None => Self { cx: parent },
            Some(t) => {
                let span = t
                    .span_builder(name)
                    .with_kind(SpanKind::Server)
                    .start_with_context(t, &parent);
                Self {
                    cx: parent.with_span(span),
                }
            }
        }
    }

    /// The trace id (32 hex digits), empty without a trace.
    pub fn trace_id(&self) -> String {
        let sc = self.cx.span().span_context().clone();
        if sc.is_valid() {
            sc.trace_id().to_string()
        } else {
            String::new()
        }
    }

    /// What a message record keeps: `(traceparent, tracestate)` of the
    /// request span (or of the client when not exporting); `None` without
    /// a trace.
    pub fn carrier(&self) -> (Option<String>, Option<String>) {
        if !self.cx.span().span_context().is_valid() {
            return (None, None);
        }
        let mut out = HashMap::new();
        TraceContextPropagator::new().inject_context(&self.cx, &mut out);
        let state = out.remove("tracestate").filter(|s| !s.is_empty());
        (out.remove("traceparent"), state)
    }

    /// A step of the request (`smsgw.persist`, …), ended when dropped;
    /// `None` when not exporting.
    pub fn step(&self, name: &'static str) -> Option<Span> {
        let t = tracer()?;
        Some(t.start_with_context(name, &self.cx))
    }

    /// Sets an attribute of the request span.
    pub fn set(&self, kv: KeyValue) {
        if enabled() {
            self.cx.span().set_attribute(kv);
        }
    }

    /// Ends the request span with its outcome: an error code (and HTTP
    /// status) marks it failed.
    pub fn finish(self, error: Option<(&'static str, u16)>) {
        if !enabled() {
            return;
        }
        let span = self.cx.span();
        if let Some((code, status)) = error {
            span.set_attribute(KeyValue::new("smsgw.error_code", code));
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            span.set_status(Status::error(code));
        }
        span.end();
    }
}

/// The span of a message's SMPP submission, and its start time (each
/// segment's span starts with it).
pub struct SubmitSpan {
    cx: Context,
    start: SystemTime,
}

impl SubmitSpan {
    /// Starts `smsgw.submit` below the record's stored context; `None`
    /// when not exporting.
    pub fn start(rec: &MessageRecord) -> Option<Self> {
        let t = tracer()?;
        let parent = stored(rec).unwrap_or_default();
        let start = SystemTime::now();
        let span = t
            .span_builder("smsgw.submit")
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes([
                KeyValue::new("smsgw.message_id", rec.message_id.clone()),
                KeyValue::new("smsgw.target", rec.target.name().to_owned()),
                KeyValue::new("smsgw.segments", rec.segments.len() as i64),
            ])
            .start_with_context(t, &parent);
        Some(Self {
            cx: parent.with_span(span),
            start,
        })
    }

    /// Records one segment's `submit_sm` outcome as a child span
    /// (`smpp.submit_sm`) from the submission's start to now.
    pub fn segment(&self, seq: u16, outcome: &str, attrs: Vec<KeyValue>) {
        let Some(t) = tracer() else { return };
        let mut span = t
            .span_builder("smpp.submit_sm")
            .with_kind(SpanKind::Client)
            .with_start_time(self.start)
            .start_with_context(t, &self.cx);
        span.set_attribute(KeyValue::new("smsgw.segment", i64::from(seq) + 1));
        span.set_attribute(KeyValue::new("smpp.outcome", outcome.to_owned()));
        for kv in attrs {
            span.set_attribute(kv);
        }
        if outcome != "accepted" {
            span.set_status(Status::error(outcome.to_owned()));
        }
        span.end();
    }

    /// Ends the submission span, naming the link that carried it (or why
    /// nothing was sent).
    pub fn finish(self, link: Option<&str>, error: Option<&str>) {
        let span = self.cx.span();
        if let Some(l) = link {
            span.set_attribute(KeyValue::new("smsgw.link", l.to_owned()));
        }
        if let Some(e) = error {
            span.set_status(Status::error(e.to_owned()));
        }
        span.end();
    }
}

/// Records a delivery receipt applied to `rec` as `smsgw.receipt`, a
/// child of the record's stored context, from `start` to now. Nothing
/// when not exporting or when the record carries no context.
pub fn receipt(rec: &MessageRecord, start: SystemTime, attrs: Vec<KeyValue>) {
    let Some(t) = tracer() else { return };
    let Some(parent) = stored(rec) else { return };
    let mut span = t
        .span_builder("smsgw.receipt")
        .with_kind(SpanKind::Consumer)
        .with_start_time(start)
        .with_attributes(attrs)
        .start_with_context(t, &parent);
    span.set_attribute(KeyValue::new("smsgw.message_id", rec.message_id.clone()));
    span.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_stored_context_is_read_back_from_the_record_alone() {
        assert!(
            extract(&Stored("00-zz-yy-01", None))
                .span()
                .span_context()
                .trace_id()
                == opentelemetry::trace::TraceId::INVALID
        );
        let cx = extract(&Stored(TP, Some("vendor=1")));
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
    }
}
