"""Sends traces to sluice with the real OpenTelemetry SDK for Python and its OTLP exporters.

Used by tests/it/traces.rs (run with $SLUICE_TEST_PYTHON). Spans are made by a TracerProvider,
collected in memory, then handed to the SDK's own OTLPSpanExporter (gRPC or HTTP), whose retry
logic (RetryInfo, Retry-After) is what a service in production runs. Prints one JSON object:
the spans sent (ids as lowercase hex) and the result of every export call.

    send_traces.py nested --grpc HOST:PORT --http http://HOST:PORT/v1/traces
    send_traces.py load --grpc HOST:PORT --http URL --exports N --spans M [--timeout S]
    send_traces.py known --grpc HOST:PORT
"""

import argparse
import json
import sys

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

KINDS = {
    SpanKind.INTERNAL: "SPAN_KIND_INTERNAL",
    SpanKind.SERVER: "SPAN_KIND_SERVER",
    SpanKind.CLIENT: "SPAN_KIND_CLIENT",
    SpanKind.PRODUCER: "SPAN_KIND_PRODUCER",
    SpanKind.CONSUMER: "SPAN_KIND_CONSUMER",
}
STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}


def provider(service):
    memory = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": service, "service.version": "1.2.3"}))
    tp.add_span_processor(SimpleSpanProcessor(memory))
    return tp, memory


def text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(text(v) for v in value) + "]"
    return str(value)


def describe(span, transport):
    ctx = span.get_span_context()
    return {
        "transport": transport,
        "service": span.resource.attributes["service.name"],
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else "",
        "name": span.name,
        "kind": KINDS[span.kind],
        "status_code": STATUS[span.status.status_code],
        "status_message": span.status.description or "",
        "attributes": {k: text(v) for k, v in span.attributes.items()},
        "start": span.start_time,
        "end": span.end_time,
    }


def export(exporter, spans):
    result = exporter.export(spans)
    return "SUCCESS" if result == SpanExportResult.SUCCESS else "FAILURE"


def nested(args):
    """Five nested spans over gRPC (gateway -> router -> model server -> tool server -> memory
    engine), three over HTTP."""
    out = {"spans": [], "exports": []}
    tp, memory = provider("gateway")
    tracer = tp.get_tracer("sluice.test", "0.1")
    chain = [
        ("POST /v1/chat/completions", SpanKind.SERVER),
        ("router.route", SpanKind.INTERNAL),
        ("model-server generate", SpanKind.CLIENT),
        ("tool-server call", SpanKind.CLIENT),
        ("memory-engine lookup", SpanKind.CLIENT),
    ]

    def level(i):
        name, kind = chain[i]
        with tracer.start_as_current_span(name, kind=kind) as span:
            span.set_attribute("depth", i)
            span.set_attribute("component", name.split()[0])
            span.set_attribute("ratio", 0.25 * i)
            span.set_attribute("sampled", i % 2 == 0)
            span.set_attribute("tags", ["a", "b", str(i)])
            if i + 1 < len(chain):
                level(i + 1)
            else:
                span.set_status(Status(StatusCode.ERROR, "memory engine timed out"))
                span.add_event("timeout", {"after_ms": 250})
            if i == 0:
                span.set_status(Status(StatusCode.OK))

    level(0)
    grpc = GrpcExporter(endpoint=args.grpc, insecure=True, timeout=30)
    spans = memory.get_finished_spans()
    out["exports"].append(export(grpc, spans))
    out["spans"] += [describe(s, "grpc") for s in spans]

    tp2, memory2 = provider("router")
    tracer2 = tp2.get_tracer("sluice.test.http")
    with tracer2.start_as_current_span("GET /v1/models", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.route", "/v1/models")
        with tracer2.start_as_current_span("cache lookup", kind=SpanKind.CLIENT) as child:
            child.set_attribute("cache.hit", False)
        with tracer2.start_as_current_span("db query", kind=SpanKind.CLIENT) as child:
            child.set_attribute("db.rows", 42)
    http = HttpExporter(endpoint=args.http, timeout=30)
    spans = memory2.get_finished_spans()
    out["exports"].append(export(http, spans))
    out["spans"] += [describe(s, "http") for s in spans]
    print(json.dumps(out))


def load(args):
    """`exports` export calls of `spans` spans each, alternating gRPC and HTTP when both are given."""
    out = {"spans": 0, "exports": []}
    tp, memory = provider("load")
    tracer = tp.get_tracer("sluice.test.load")
    exporters = []
    if args.grpc:
        exporters.append(GrpcExporter(endpoint=args.grpc, insecure=True, timeout=args.timeout))
    if args.http:
        exporters.append(HttpExporter(endpoint=args.http, timeout=args.timeout))
    for n in range(args.exports):
        memory.clear()
        for i in range(args.spans):
            with tracer.start_as_current_span(f"op-{i % 7}", kind=SpanKind.SERVER) as span:
                span.set_attribute("export", n)
                span.set_attribute("payload", "x" * 100)
        spans = memory.get_finished_spans()
        out["exports"].append(export(exporters[n % len(exporters)], spans))
        out["spans"] += len(spans)
        print(json.dumps({"progress": n + 1}), file=sys.stderr, flush=True)
    print(json.dumps(out))


def known(args):
    """A known set of server and client spans with fixed durations, for span metrics."""
    out = {"spans": [], "exports": []}
    start = 1_700_000_000_000_000_000
    plan = [
        # service, name, kind, error?, duration in ns, count
        ("gateway", "POST /v1/chat/completions", SpanKind.SERVER, False, 3_000_000, 18),
        ("gateway", "POST /v1/chat/completions", SpanKind.SERVER, True, 1_500_000_000, 2),
        ("gateway", "GET qdrant", SpanKind.CLIENT, True, 7_000_000, 5),
        ("api-server", "GET /v1/models", SpanKind.SERVER, False, 40_000_000, 49),
        ("api-server", "GET /v1/models", SpanKind.SERVER, True, 40_000_000, 1),
    ]
    by_service = {}
    for service, name, kind, error, nanos, count in plan:
        if service not in by_service:
            by_service[service] = provider(service)
        tracer = by_service[service][0].get_tracer("sluice.test.metrics")
        for _ in range(count):
            span = tracer.start_span(name, kind=kind, start_time=start)
            if error:
                span.set_status(Status(StatusCode.ERROR, "failed"))
            span.end(end_time=start + nanos)
    grpc = GrpcExporter(endpoint=args.grpc, insecure=True, timeout=30)
    for service, (_, memory) in by_service.items():
        spans = memory.get_finished_spans()
        out["exports"].append(export(grpc, spans))
        out["spans"] += [describe(s, "grpc") for s in spans]
    print(json.dumps(out))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["nested", "load", "known"])
    parser.add_argument("--grpc")
    parser.add_argument("--http")
    parser.add_argument("--exports", type=int, default=10)
    parser.add_argument("--spans", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    {"nested": nested, "load": load, "known": known}[args.mode](args)


if __name__ == "__main__":
    main()
