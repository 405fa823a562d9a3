//! OpenTelemetry traces: a real gateway exports the spans of each message
//! over OTLP/gRPC to a collector in this test, joining the client's trace
//! (W3C `traceparent` over HTTP and gRPC metadata), from the API call to
//! the receipt; with two gateways on one Redis, a receipt applied on the
//! other gateway joins the trace through the context stored with the
//! message.

use crate::harness::{ADMIN_KEY, Creds, Gateway, Sim, bound, eventually, sim_config};
use crate::messages::wait_status;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use reqwest::Method;
use serde_json::{Value, json};
use smsgw_proto::sms::v1::{SmsRequest, sms_service_client::SmsServiceClient};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One exported span, ids as hex.
#[derive(Clone, Debug)]
struct Got {
    trace: String,
    id: String,
    parent: String,
    name: String,
    kind: i32,
    /// `service.instance.id` of the exporting gateway.
    pod: String,
    attrs: Vec<(String, String)>,
}

impl Got {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

/// An OTLP/gRPC collector on an ephemeral port, keeping every span.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Got>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
            .as_ref()
            .and_then(|v| v.value.as_ref())
        {
            Some(Any::StringValue(s)) => s.clone(),
            Some(Any::IntValue(i)) => i.to_string(),
            Some(Any::BoolValue(b)) => b.to_string(),
            other => format!("{other:?}"),
        };
        let mut out = self.spans.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let pod = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.instance.id")
                .map(|kv| text(&kv.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Got {
                        trace: hex(&s.trace_id),
                        id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        name: s.name,
                        kind: s.kind,
                        pod: pod.clone(),
                        attrs: s
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text(&kv.value)))
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

impl Collector {
    /// Serves on 127.0.0.1 (ephemeral port); returns its `http://` URL.
    async fn start() -> (Collector, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let c = Collector::default();
        let svc = TraceServiceServer::new(c.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (c, url)
    }

    fn of_trace(&self, trace: &str) -> Vec<Got> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace == trace)
            .cloned()
            .collect()
    }

    /// Waits (up to 15 s) until the trace has an API span and a receipt span.
    async fn complete_trace(&self, trace: &str, api: &str) -> Vec<Got> {
        let mut spans = Vec::new();
        let done = eventually(Duration::from_secs(15), async || {
            spans = self.of_trace(trace);
            ["smsgw.receipt", "smsgw.submit", api]
                .iter()
                .all(|n| spans.iter().any(|s| s.name == *n))
        })
        .await;
        assert!(done.is_some(), "trace {trace} incomplete: {spans:#?}");
        spans
    }
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const CONSUMER: i32 = 5;

/// The one span named `name`.
fn one<'a>(spans: &'a [Got], name: &str) -> &'a Got {
    let found: Vec<&Got> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "{name}: {spans:#?}");
    found[0]
}

/// Asserts the span tree of one delivered single-segment message: the API
/// span below the client's span, the steps and the submission below it,
/// one `submit_sm` below the submission, the receipt below the API span.
fn assert_message_tree(spans: &[Got], api: &str, client_span: &str, message_id: &str) -> String {
    let root = one(spans, api);
    assert_eq!(root.parent, client_span, "the API span joins the client's");
    assert_eq!(root.kind, SERVER);
    assert_eq!(root.attr("smsgw.message_id"), Some(message_id));
    for step in ["smsgw.rate_limit", "smsgw.persist"] {
        assert_eq!(one(spans, step).parent, root.id, "{step}");
    }
    let submit = one(spans, "smsgw.submit");
    assert_eq!(submit.parent, root.id);
    assert_eq!(submit.kind, CLIENT);
    assert_eq!(submit.attr("smsgw.link"), Some("sim-link"));
    let seg = one(spans, "smpp.submit_sm");
    assert_eq!(seg.parent, submit.id);
    assert_eq!(seg.attr("smpp.outcome"), Some("accepted"));
    let receipt = one(spans, "smsgw.receipt");
    assert_eq!(
        receipt.parent, root.id,
        "the receipt joins the stored context"
    );
    assert_eq!(receipt.kind, CONSUMER);
    assert_eq!(receipt.attr("smpp.receipt_state"), Some("DELIVRD"));
    assert_eq!(receipt.attr("smsgw.message_id"), Some(message_id));
    receipt.pod.clone()
}

/// Waits until message `id` is delivered and its trace complete, then
/// checks the span tree below the client's `(trace id, span id)`; returns
/// the gateway that applied the receipt.
async fn delivered_in_trace(
    gw: &Gateway,
    creds: &Creds,
    collector: &Collector,
    (trace, client_span): (&str, &str),
    api: &str,
    id: &str,
) -> (Vec<Got>, String) {
    wait_status(gw, creds, id, "delivered", Duration::from_secs(10)).await;
    let spans = collector.complete_trace(trace, api).await;
    let pod = assert_message_tree(&spans, api, client_span, id);
    (spans, pod)
}

fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

const REST_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const REST_PARENT: &str = "00f067aa0ba902b7";
const GRPC_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const GRPC_PARENT: &str = "b7ad6b7169203331";
const STREAM_TRACE: &str = "5e3a1b0c9d8f7e6a5b4c3d2e1f0a9b8c";
const STREAM_PARENT: &str = "1122334455667788";

async fn rest_send(gw: &Gateway, creds: &Creds, trace: &str, parent: &str, tx: &str) -> String {
    let r: Value = gw
        .authed(creds, Method::POST, "/api/v1/sms/send")
        .header("traceparent", traceparent(trace, parent))
        .header("tracestate", "client=1")
        .json(&json!({"esme": "default", "source": "SMSGW", "destination": "+4915112345678", "message": "traced", "transaction_id": tx}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["message_id"]
        .as_str()
        .unwrap_or_else(|| panic!("not accepted: {r}"))
        .to_owned()
}

fn grpc_req(creds: &Creds, tx: &str, trace: &str, parent: &str) -> tonic::Request<SmsRequest> {
    let mut req = creds.grpc(SmsRequest {
        esme: "default".into(),
        saddr: "SMSGW".into(),
        daddr: "4915100000042".into(),
        message: "traced over gRPC".into(),
        transaction_id: tx.into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("traceparent", traceparent(trace, parent).parse().unwrap());
    req
}

#[tokio::test]
async fn spans_of_a_message_join_the_clients_trace_from_api_to_receipt() {
    let (collector, url) = Collector::start().await;
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::spawn(
        &sim_config(sim.addr),
        &[
            ("ADMIN_API_KEY", ADMIN_KEY),
            // The endpoint through the standard variable; export every 100 ms.
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        &["--pod-name", "pod-1"],
    );
    let creds = gw.user("traces@example.com").await;
    bound(&gw, &creds).await;

    // REST, with traceparent and tracestate headers.
    let id = rest_send(&gw, &creds, REST_TRACE, REST_PARENT, "tx-trace-rest").await;
    let api = "POST /api/v1/sms/send";
    delivered_in_trace(&gw, &creds, &collector, (REST_TRACE, REST_PARENT), api, &id).await;

    // gRPC SendMessage, traceparent in the metadata.
    let mut client = SmsServiceClient::new(gw.channel().await);
    let r = client
        .send_message(grpc_req(&creds, "tx-trace-grpc", GRPC_TRACE, GRPC_PARENT))
        .await
        .unwrap()
        .into_inner();
    let api = "sms.v1.SmsService/SendMessage";
    delivered_in_trace(
        &gw,
        &creds,
        &collector,
        (GRPC_TRACE, GRPC_PARENT),
        api,
        &r.message_id,
    )
    .await;

    // SendMessageStream: the stream's metadata, one span per message.
    let mut req = creds.grpc(tokio_stream::iter(vec![
        grpc_req(&creds, "tx-trace-s1", "", "").into_inner(),
    ]));
    req.metadata_mut().insert(
        "traceparent",
        traceparent(STREAM_TRACE, STREAM_PARENT).parse().unwrap(),
    );
    let mut answers = client.send_message_stream(req).await.unwrap().into_inner();
    let streamed = answers.message().await.unwrap().expect("one answer");
    assert!(streamed.success, "{streamed:?}");
    let api = "sms.v1.SmsService/SendMessageStream";
    let client_span = (STREAM_TRACE, STREAM_PARENT);
    delivered_in_trace(
        &gw,
        &creds,
        &collector,
        client_span,
        api,
        &streamed.message_id,
    )
    .await;

    // The state-change log lines carry the client's trace id.
    let lines: Vec<Value> = gw
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "smsgw::message" && v["message_id"] == id.as_str())
        .collect();
    assert!(lines.len() >= 3, "{lines:?}");
    for l in &lines {
        assert_eq!(l["trace_id"], REST_TRACE, "{l}");
    }
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_but_logs_keep_the_clients_trace_id() {
    let sim = Sim::start("127.0.0.1:0");
    let gw = Gateway::standalone(&sim_config(sim.addr));
    let creds = gw.user("notrace@example.com").await;
    bound(&gw, &creds).await;
    let id = rest_send(&gw, &creds, REST_TRACE, REST_PARENT, "tx-untraced").await;
    wait_status(&gw, &creds, &id, "delivered", Duration::from_secs(10)).await;
    let logs = gw.logs();
    assert!(
        !logs.contains("exporting spans"),
        "export is off by default"
    );
    let delivered = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message_id"] == id.as_str() && v["event"] == "delivered")
        .expect("a delivered line");
    assert_eq!(delivered["trace_id"], REST_TRACE);
}

/// One SmppLink with separate transmitter and receiver binds: the simulator
/// hands receipts to any receiver bind, round robin, so with two gateways
/// bound half the receipts reach the gateway that did not submit.
fn trx_config(sim: std::net::SocketAddr) -> String {
    sim_config(sim).replace(
        "  messageIdFormat: hex\n",
        "  messageIdFormat: hex\n  bindMode: transmitterReceiver\n",
    )
}

#[tokio::test]
async fn a_receipt_applied_on_another_gateway_joins_the_trace_stored_with_the_message() {
    let (collector, url) = Collector::start().await;
    let redis = smsgw_store::testing::RedisServer::start();
    let sim = Sim::start_with("127.0.0.1:0", &["--receipt-delay", "300ms"]);
    let config = trx_config(sim.addr);
    let redis_url = redis.url();
    let env = [
        ("ADMIN_API_KEY", ADMIN_KEY),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let args = |pod: &'static str| {
        [
            "--store",
            "redis",
            "--store-redis-url",
            &redis_url,
            "--redis-url",
            &redis_url,
            "--otlp-endpoint",
            &url,
            "--pod-name",
            pod,
        ]
        .map(str::to_owned)
    };
    let a_args = args("pod-a");
    let a = Gateway::spawn(&config, &env, &a_args.each_ref().map(String::as_str));
    let b_args = args("pod-b");
    let b = Gateway::spawn(&config, &env, &b_args.each_ref().map(String::as_str));
    let creds = a.user("two-pods@example.com").await;
    for gw in [&a, &b] {
        let mut last = Value::Null;
        let up = eventually(Duration::from_secs(10), async || {
            last = gw.admin_get("/api/v1/admin/links").await;
            last["links"]
                .as_array()
                .is_some_and(|l| l.iter().all(|l| l["sessions_bound"] == 4))
        })
        .await;
        assert!(up.is_some(), "links never bound (2 × tx + rx): {last}");
    }

    // Four messages through gateway A, each in its own client trace.
    let traces: Vec<String> = (0..4).map(|i| format!("{:032x}", 0xabc0 + i)).collect();
    let mut ids = Vec::new();
    for (i, t) in traces.iter().enumerate() {
        ids.push(rest_send(&a, &creds, t, "0102030405060708", &format!("tx-2pod-{i}")).await);
    }
    let mut pods = Vec::new();
    for (t, id) in traces.iter().zip(&ids) {
        let api = "POST /api/v1/sms/send";
        let client_span = (t.as_str(), "0102030405060708");
        let (spans, pod) = delivered_in_trace(&a, &creds, &collector, client_span, api, id).await;
        assert_eq!(one(&spans, api).pod, "pod-a");
        pods.push(pod);
    }
    assert!(
        pods.iter().any(|p| p == "pod-b"),
        "no receipt reached the other gateway: {pods:?}"
    );
}
