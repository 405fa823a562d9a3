//! Running the REST and gRPC servers until a cancellation token fires.

use crate::{ApiState, SmsGrpc};
use std::future::Future;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves the REST API on `listener` until `cancel` fires, then finishes
/// in-flight requests and returns.
pub async fn serve_rest(
    listener: TcpListener,
    state: ApiState,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = crate::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

/// Serves gRPC on `listener` — `sms.v1.SmsService`, `grpc.health.v1` and
/// server reflection — until `cancel` fires.
pub async fn serve_grpc(
    listener: TcpListener,
    state: ApiState,
    cancel: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<smsgw_proto::sms::v1::sms_service_server::SmsServiceServer<SmsGrpc>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(smsgw_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor set is valid");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(SmsGrpc::new(state).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown(cancel))
        .await
}

fn shutdown(cancel: CancellationToken) -> impl Future<Output = ()> {
    async move { cancel.cancelled().await }
}
