use super::*;

#[test]
fn final_codes_name_their_drop_reason() {
    assert_eq!(grpc_reason(tonic::Code::InvalidArgument), "rejected_invalid_argument");
    assert_eq!(grpc_reason(tonic::Code::Unauthenticated), "rejected_unauthenticated");
    assert_eq!(grpc_reason(tonic::Code::ResourceExhausted), "rejected_resource_exhausted");
}

#[tokio::test]
async fn builds_both_exporters_without_connecting() {
    for yaml in [
        "{endpoint: 'http://127.0.0.1:9', compression: gzip, headers: {X-Tenant: a}}",
        "{endpoint: 'https://jaeger.example:4317', tls: {server_name: jaeger}}",
        "{endpoint: 'http://127.0.0.1:9', protocol: http, compression: gzip, headers: {x-tenant: a}}",
    ] {
        let config: config::OtlpSinkConfig = serde_saphyr::from_str(yaml).unwrap();
        let handles = SinkHandles::new(&crate::telemetry::metrics::SinkMetrics::default(), "t");
        assert!(OtlpSink::build(&config, handles).is_ok(), "{yaml}");
    }
}

#[test]
fn config_validation_and_http_url() {
    let config = |yaml: &str| -> config::OtlpSinkConfig { serde_saphyr::from_str(yaml).unwrap() };
    let good = config("{endpoint: 'http://jaeger:4317'}");
    assert!(good.validate().is_empty());
    assert_eq!((good.protocol, good.compression, good.concurrency), (Protocol::Grpc, config::Compression::None, 4));
    assert_eq!(config("{endpoint: 'http://c:4318', protocol: http}").http_url(), "http://c:4318/v1/traces");
    assert_eq!(config("{endpoint: 'http://c:4318/', protocol: http}").http_url(), "http://c:4318/v1/traces");
    assert_eq!(config("{endpoint: 'https://c/otlp/v1/traces', protocol: http}").http_url(), "https://c/otlp/v1/traces");
    let bad = config("{endpoint: 'jaeger:4317', concurrency: 0, headers: {'bad name': x}}");
    let messages: Vec<String> = bad.validate().into_iter().map(|(_, m)| m).collect();
    assert_eq!(
        messages,
        [
            "endpoint `jaeger:4317` is not an http:// or https:// URL such as http://jaeger:4317",
            "concurrency must be above 0",
            "headers: `bad name` is not a valid header name",
        ]
    );
    let with_path = config("{endpoint: 'http://jaeger:4317/v1/traces'}");
    assert_eq!(with_path.validate().len(), 1);
}
