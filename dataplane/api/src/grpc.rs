//! gRPC `sms.v1.SmsService` on tonic.

use crate::{ApiError, ApiState};
use smsgw_proto::sms::v1 as pb;
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

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

impl SmsGrpc {
    /// Counts and returns a refused call.
    fn refuse<T>(&self, method: &str, e: ApiError) -> Result<T, Status> {
        let r = Err(Status::from(e));
        self.state.metrics.observe_grpc::<T>(method, &r);
        r
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

const NOT_YET: &str = "this build of smsgw does not send messages yet";

#[tonic::async_trait]
impl pb::sms_service_server::SmsService for SmsGrpc {
    async fn send_message(
        &self,
        _req: Request<pb::SmsRequest>,
    ) -> Result<Response<pb::SmsResponse>, Status> {
        self.refuse("SendMessage", ApiError::Unimplemented(NOT_YET))
    }

    type SendMessageStreamStream = BoxStream<pb::SmsResponse>;

    async fn send_message_stream(
        &self,
        _req: Request<Streaming<pb::SmsRequest>>,
    ) -> Result<Response<Self::SendMessageStreamStream>, Status> {
        self.refuse("SendMessageStream", ApiError::Unimplemented(NOT_YET))
    }

    async fn check_esme(
        &self,
        _req: Request<pb::CheckEsmeRequest>,
    ) -> Result<Response<pb::CheckEsmeResponse>, Status> {
        self.refuse(
            "CheckESME",
            ApiError::Unimplemented("this build of smsgw holds no SMPP links yet"),
        )
    }

    async fn check_text_len(
        &self,
        req: Request<pb::CheckTextLenRequest>,
    ) -> Result<Response<pb::CheckTextLenResponse>, Status> {
        let req = req.into_inner();
        let result = crate::text::check_text_len(
            &self.state.config.load(),
            Some(&req.message),
            Some(&req.esme),
        )
        .map(|r| {
            self.state.metrics.observe_encoding(&r.encoding);
            pb::CheckTextLenResponse {
                encoding: r.encoding,
                characters: r.characters,
                units: r.units,
                segments: r.segments,
                per_segment: r.per_segment,
            }
        })
        .map_err(Status::from);
        self.state.metrics.observe_grpc("CheckTextLen", &result);
        result.map(Response::new)
    }

    async fn sms_info(
        &self,
        _req: Request<pb::SmsInfoRequest>,
    ) -> Result<Response<pb::SmsInfoResponse>, Status> {
        self.refuse("SmsInfo", ApiError::Unimplemented(NOT_YET))
    }

    type WatchEventsStream = BoxStream<pb::MessageEvent>;

    async fn watch_events(
        &self,
        _req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.refuse("WatchEvents", ApiError::Unimplemented(NOT_YET))
    }
}
