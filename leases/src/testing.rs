//! Helpers of the tests against a mocked API server (tower-test), as
//! kube-rs' controller-rs `fixtures.rs` does: each test scripts the
//! requests it expects and the answers, in order. Used by this crate's
//! tests and the operator's (feature `testing`).

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::client::Body;

/// The test's end of the mocked API server.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A client whose every request goes to the returned [`Handle`].
pub fn mock_client() -> (Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "smsgw"), handle)
}

/// Answers the next request after checking method and path; returns its
/// JSON body.
pub async fn expect(
    handle: &mut Handle,
    method: Method,
    path: &str,
    status: StatusCode,
    answer: serde_json::Value,
) -> serde_json::Value {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!(req.method(), method, "{}", req.uri());
    assert_eq!(req.uri().path(), path);
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    body
}

/// Waits 300 ms for a further request (or the client gone) and panics
/// naming one that comes, with `why` it was not expected.
pub async fn no_more_requests(handle: &mut Handle, why: &str) {
    if let Ok(Some((req, _))) =
        tokio::time::timeout(std::time::Duration::from_millis(300), handle.next_request()).await
    {
        panic!("{why}: unexpected request {} {}", req.method(), req.uri());
    }
}

/// The body of a 404 NotFound answer.
pub fn not_found() -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

/// A Lease held by `holder`, renewed at `renewed`, resourceVersion 7.
pub fn lease(name: &str, holder: &str, renewed: Timestamp) -> serde_json::Value {
    serde_json::to_value(Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            resource_version: Some("7".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            ..Default::default()
        }),
    })
    .unwrap()
}
