//! The transports' side of message traces: a client's W3C context read
//! from HTTP headers or gRPC metadata. The spans themselves are made by
//! [`smsgw_messaging::trace`], re-exported here.

pub use smsgw_messaging::trace::*;

use opentelemetry::Context;

/// Reads `traceparent`/`tracestate` from HTTP headers.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Reads `traceparent`/`tracestate` from gRPC metadata.
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The trace of a request, below the client's context from HTTP headers.
pub fn from_headers(name: &'static str, headers: &http::HeaderMap) -> RequestTrace {
    RequestTrace::from_carrier(name, &Headers(headers))
}

/// The client's context from gRPC metadata, without a span: a stream
/// reads it once and starts one span per message with
/// [`RequestTrace::child_of`].
pub fn client_context(metadata: &tonic::metadata::MetadataMap) -> Context {
    extract(&Metadata(metadata))
}

/// The trace of a request, below the client's context from gRPC metadata.
pub fn from_metadata(name: &'static str, metadata: &tonic::metadata::MetadataMap) -> RequestTrace {
    RequestTrace::from_carrier(name, &Metadata(metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(tp: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("traceparent", tp.parse().unwrap());
        h.insert("tracestate", "vendor=1".parse().unwrap());
        h
    }

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn without_export_the_clients_context_is_kept_as_is() {
        // No tracer is installed in this test binary.
        let t = from_headers("x", &headers(TP));
        assert_eq!(t.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(
            t.carrier(),
            (Some(TP.to_owned()), Some("vendor=1".to_owned()))
        );
        assert!(t.step("s").is_none());
    }

    #[test]
    fn no_or_malformed_traceparent_means_no_trace() {
        let t = from_headers("x", &http::HeaderMap::new());
        assert_eq!(t.trace_id(), "");
        assert_eq!(t.carrier(), (None, None));
        let t = from_headers("x", &headers("00-zz-yy-01"));
        assert_eq!(t.carrier(), (None, None));
    }
}
