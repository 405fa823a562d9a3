//! The gRPC services in process (`smsgw_api::server::grpc_routes`, the
//! tower service the gateway serves, over the same fixture as `rest`), fed
//! arbitrary message bytes, framing and credentials on every client-facing
//! method: nothing panics, and every refusal is a gRPC status with a
//! message — never `UNKNOWN`, and `INTERNAL` only for what tonic's own
//! codec answers to octets that are not a message of the method's type.
//!
//! Input: `[method: u8][flags: u8][payload]`. `flags & 3` picks the
//! credentials (user token, admin key, forged token, none); `flags & 4`
//! sends the payload unframed (a broken gRPC length prefix); streaming
//! requests split the payload into frames of `[len: u8][octets]`.

#![no_main]

#[path = "api_fixture.rs"]
mod api_fixture;

use std::{sync::OnceLock, time::Duration};

use api_fixture::fixture;
use axum::http::{Request, header};
use bytes::{BufMut, BytesMut};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// (path, client-streaming, server-streaming without end)
const METHODS: [(&str, bool, bool); 26] = [
    ("/sms.v1.SmsService/SendMessage", false, false),
    ("/sms.v1.SmsService/SendMessageStream", true, false),
    ("/sms.v1.SmsService/CheckESME", false, false),
    ("/sms.v1.SmsService/CheckTextLen", false, false),
    ("/sms.v1.SmsService/SmsInfo", false, false),
    ("/sms.v1.SmsService/WatchEvents", false, true),
    ("/auth.v1.AuthService/Register", false, false),
    ("/auth.v1.AuthService/Login", false, false),
    ("/auth.v1.AuthService/Token", false, false),
    ("/admin.v1.AdminService/ListUsers", false, false),
    ("/admin.v1.AdminService/GetUser", false, false),
    ("/admin.v1.AdminService/UpdateUser", false, false),
    ("/admin.v1.AdminService/DeleteUser", false, false),
    ("/admin.v1.AdminService/SetAdmin", false, false),
    ("/admin.v1.AdminService/ResetAppSecret", false, false),
    ("/admin.v1.AdminService/ListLinks", false, false),
    ("/admin.v1.AdminService/ControlLink", false, false),
    ("/admin.v1.AdminService/GetConfig", false, false),
    ("/admin.v1.AdminService/GetStats", false, false),
    ("/admin.v1.AdminService/ReloadBlacklist", false, false),
    ("/sms.v1.SmsService/ClaimAddress", false, false),
    ("/sms.v1.SmsService/ListAddressClaims", false, false),
    ("/sms.v1.SmsService/ReleaseAddress", false, false),
    ("/admin.v1.AdminService/ListAddressClaims", false, false),
    ("/admin.v1.AdminService/ApproveAddressClaim", false, false),
    ("/admin.v1.AdminService/RejectAddressClaim", false, false),
];

fn routes() -> &'static tonic::service::Routes {
    static R: OnceLock<tonic::service::Routes> = OnceLock::new();
    R.get_or_init(|| {
        let f = fixture();
        f.rt.block_on(smsgw_api::server::grpc_routes(f.state.clone()))
    })
}

fn frame(out: &mut BytesMut, msg: &[u8]) {
    out.put_u8(0);
    out.put_u32(msg.len() as u32);
    out.put_slice(msg);
}

/// What tonic's codec answers (as INTERNAL) to octets that do not decode
/// or frames it cannot read: not the gateway's doing.
fn codec_refusal(message: &str) -> bool {
    message.starts_with("failed to decode")
        || message.starts_with("protocol error")
        || message.contains("Unexpected EOF decoding stream")
        || message == "Missing request message."
}

fuzz_target!(|data: &[u8]| {
    let [method, flags, payload @ ..] = data else {
        return;
    };
    let (path, client_stream, endless) = METHODS[usize::from(*method) % METHODS.len()];
    let mut body = BytesMut::new();
    if flags & 4 != 0 {
        body.put_slice(payload);
    } else if client_stream {
        let mut rest = payload;
        while let [len, tail @ ..] = rest {
            let n = usize::from(*len).min(tail.len());
            frame(&mut body, &tail[..n]);
            rest = &tail[n..];
        }
    } else {
        frame(&mut body, payload);
    }
    let f = fixture();
    let req = Request::post(format!("http://gateway{path}"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers");
    let req = f.credentials(req, *flags);
    let req = req.body(axum::body::Body::from(body.freeze())).unwrap();
    let routes = routes().clone();
    f.rt.block_on(async {
        let resp = routes.oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), 200, "{path}: gRPC answers over HTTP 200");
        let headers = resp.headers().clone();
        // A server stream stays open while it has nothing to send: what
        // it sent in a moment is enough.
        let wait = if endless {
            Duration::from_millis(50)
        } else {
            Duration::from_secs(30)
        };
        let collected = tokio::time::timeout(wait, resp.into_body().collect()).await;
        let trailers = match collected {
            Ok(Ok(c)) => c.trailers().cloned(),
            Ok(Err(e)) => panic!("{path}: the response body failed: {e}"),
            Err(_) if endless => return,
            Err(_) => panic!("{path}: no answer within {wait:?}"),
        };
        let status = trailers
            .as_ref()
            .and_then(tonic::Status::from_header_map)
            .or_else(|| tonic::Status::from_header_map(&headers))
            .unwrap_or_else(|| panic!("{path}: an answer without grpc-status"));
        let code = status.code();
        if code == tonic::Code::Ok {
            return;
        }
        assert!(
            !status.message().is_empty(),
            "{path}: {code:?} without a message"
        );
        assert_ne!(code, tonic::Code::Unknown, "{path}: {}", status.message());
        if code == tonic::Code::Internal {
            assert!(
                codec_refusal(status.message()),
                "{path}: INTERNAL {}",
                status.message()
            );
        }
    });
});
