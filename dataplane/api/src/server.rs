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

/// Serves gRPC on `listener` — `sms.v1`, `auth.v1`, `admin.v1`, `grpc.health.v1` and
/// server reflection — over TLS with `tls` (ALPN `h2`) until `cancel` fires.
pub async fn serve_grpc(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    state: ApiState,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let router = tonic::transport::Server::builder().add_routes(grpc_routes(state).await);
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
