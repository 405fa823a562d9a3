//! Running the REST and gRPC servers until a cancellation token fires.

use crate::tls::{ReloadingTls, TlsIncoming};
use crate::{AdminGrpc, ApiState, AuthGrpc, SmsGrpc};
use axum::serve::ListenerExt;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves the REST API on `listener` (over TLS with `tls`) until `cancel`
/// fires, then finishes in-flight requests and returns.
pub async fn serve_rest(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    state: ApiState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = crate::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        }
        Some(tls) => {
            // `tap_io` gives the listener the connect-info (peer address)
            // axum knows for any listener whose address is a SocketAddr.
            let incoming = TlsIncoming::new(listener, tls, cancel.clone()).tap_io(|_| ());
            axum::serve(incoming, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        }
    }
}

/// HTTP/2 receive window of one gRPC stream: what a client may send on a
/// stream the server is not reading (a `SendMessageStream` held back while
/// its 256 messages in flight wait on the store or the links).
///
/// h2 (≥ 0.4.16) closes a connection (GOAWAY `ENHANCE_YOUR_CALM`,
/// "too_many_data_frames") once the DATA frames it holds unread cost more
/// framing overhead than half the connection window: a DATA frame of p < 256
/// payload bytes counts 256 − p. gRPC clients send each small message as
/// its own frame (an `SmsRequest` is ~100 bytes, counting ~156), so with
/// hyper's defaults (1 MiB for both windows) one stream held back for
/// about 3,300 messages cost the client its whole connection — its other
/// streams and every answer in flight (BENCHMARKS.md, session 16). The
/// stream window bounds what one stream can buffer; the connection window
/// sets the budget: 16 streams (`--max-streams-per-user`'s default) of
/// 64 KiB in frames of 60 payload bytes cost 16 × 64 KiB × 196 / 60 =
/// 3.3 MiB < 4 MiB = half of [`GRPC_CONNECTION_WINDOW`]. What is buffered
/// stays bounded by the stream windows (1 MiB for 16 streams).
pub const GRPC_STREAM_WINDOW: u32 = 64 * 1024;

/// HTTP/2 receive window of a whole gRPC connection; h2 allows half of it
/// as the framing overhead of unread small DATA frames (see
/// [`GRPC_STREAM_WINDOW`]).
pub const GRPC_CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

/// Serves gRPC on `listener` — `sms.v1`, `auth.v1`, `admin.v1`, `grpc.health.v1` and
/// server reflection — over TLS with `tls` (ALPN `h2`) until `cancel` fires.
pub async fn serve_grpc(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    state: ApiState,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let router = tonic::transport::Server::builder()
        .initial_stream_window_size(GRPC_STREAM_WINDOW)
        .initial_connection_window_size(GRPC_CONNECTION_WINDOW)
        .add_routes(grpc_routes(state).await);
    match tls {
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            router
                .serve_with_incoming_shutdown(incoming, shutdown(cancel))
                .await
        }
        Some(tls) => {
            let incoming = TlsIncoming::new(listener, tls, cancel.clone());
            router
                .serve_with_incoming_shutdown(incoming, shutdown(cancel))
                .await
        }
    }
}

/// Every gRPC service the gateway serves (`sms.v1`, `auth.v1`, `admin.v1`,
/// `grpc.health.v1`, reflection), each with its message size cap: what
/// [`serve_grpc`] serves, and a tower service in-process tests and fuzz
/// targets can call without a socket.
pub async fn grpc_routes(state: ApiState) -> tonic::service::Routes {
    use crate::{MAX_GRPC_MESSAGE_BYTES, MAX_UNAUTHENTICATED_GRPC_MESSAGE_BYTES as SMALL};
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let health_service = health_service.max_decoding_message_size(SMALL);
    health_reporter
        .set_serving::<smsgw_proto::sms::v1::sms_service_server::SmsServiceServer<SmsGrpc>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(smsgw_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor set is valid")
        .max_decoding_message_size(SMALL);
    tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(SmsGrpc::new(state.clone()).into_server())
        .add_service(
            smsgw_proto::auth::v1::auth_service_server::AuthServiceServer::new(AuthGrpc::new(
                state.clone(),
            ))
            .max_decoding_message_size(SMALL),
        )
        .add_service(
            smsgw_proto::admin::v1::admin_service_server::AdminServiceServer::new(AdminGrpc::new(
                state,
            ))
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
}

async fn shutdown(cancel: CancellationToken) {
    cancel.cancelled().await
}
