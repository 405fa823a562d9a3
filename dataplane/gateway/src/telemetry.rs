//! OpenTelemetry span export over OTLP/gRPC (`--otlp-endpoint`), off by
//! default. The spans themselves are made by `smsgw_messaging::trace`.

use anyhow::Context as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Trace export settings.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// OTLP/gRPC collector to export spans to, e.g. `http://otel-collector:4317`;
    /// unset: no spans are made (a client's `traceparent` is still kept
    /// with the message and logged as its `trace_id`).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "smsgw")]
    pub otlp_service_name: String,
    /// Longest wait for the collector per export.
    #[arg(long, env = "SMSGW_OTLP_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub otlp_timeout: std::time::Duration,
}

/// The span pipeline while export is on: batches spans to the collector
/// on its own thread.
pub(crate) struct Telemetry {
    provider: SdkTracerProvider,
}

/// Starts span export when `--otlp-endpoint` is set, naming this gateway
/// `pod` (`service.instance.id`). Must run inside the Tokio runtime (the
/// gRPC exporter's connection lives there).
pub(crate) fn start(args: &TelemetryArgs, pod: &str) -> anyhow::Result<Option<Telemetry>> {
    let Some(endpoint) = args.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(args.otlp_timeout)
        .build()
        .with_context(|| format!("cannot set up the OTLP exporter to {endpoint}"))?;
    let resource = Resource::builder()
        .with_service_name(args.otlp_service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            pod.to_owned(),
        ))
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    smsgw_messaging::trace::install(&provider);
    tracing::info!(%endpoint, "exporting spans over OTLP");
    Ok(Some(Telemetry { provider }))
}

impl Telemetry {
    /// Exports what is left (waits on the exporter's thread, off the
    /// async workers).
    pub(crate) async fn shutdown(&self) {
        let provider = self.provider.clone();
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "spans not all exported at shutdown"),
            Err(e) => tracing::warn!(error = %e, "span export shutdown failed"),
        }
    }
}
