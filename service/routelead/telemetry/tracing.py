"""The OpenTelemetry SDK tracer provider: every lead gets a real trace id, exported when asked.

Export and sampling follow the standard variables, so an operator configures RouteLead like any
other OpenTelemetry service:

- `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set → spans go out by
  OTLP (`OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`: `http/protobuf`, the spec's default, or `grpc`),
  in batches, off the request path. Unset → spans are made (trace ids in answers and logs) but
  go nowhere. `OTEL_TRACES_EXPORTER=none` turns export off even when an endpoint is set.
- `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (e.g. `parentbased_traceidratio`, `0.1`):
  read by the SDK itself; the default `parentbased_always_on` follows the caller's decision.
- `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource (default name `routelead`).

The variables RouteLead decides on arrive in `Settings` (routelead/settings.py); the exporter and
sampler read their details (headers, TLS, sampler) from the environment themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

if TYPE_CHECKING:
    from routelead.settings import Settings


def configure_tracing(settings: Settings | None = None) -> TracerProvider:
    """Install the SDK provider once per process (a forked worker calls this after the fork).
    Without settings (tests), spans are made but not exported."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = build_provider(settings)
    trace.set_tracer_provider(provider)
    return provider


def build_provider(settings: Settings | None = None) -> TracerProvider:
    """A provider as the OTEL_* variables describe it (the sampler is read by the SDK itself)."""
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES; OTEL_SERVICE_NAME wins over our default.
    name = settings.otel_service_name if settings is not None else "routelead"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    exporter = otlp_exporter(settings) if settings is not None else None
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def otlp_exporter(settings: Settings) -> SpanExporter | None:
    """The OTLP span exporter the standard variables ask for, or None."""
    if settings.otel_traces_exporter.strip().lower() == "none":
        return None
    if not settings.otlp_endpoint:
        return None
    protocol = settings.otlp_protocol  # grpc or http/protobuf: the settings refuse any other
    # The exporters read their endpoint, headers, timeout and TLS settings from the same variables.
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    return Http()


def add_processor(processor: SpanProcessor) -> None:
    """Attach a processor (tests: an in-memory exporter) to the installed provider."""
    configure_tracing().add_span_processor(processor)


def shutdown_tracing() -> None:
    """Flush queued spans before the process exits (SIGTERM drain)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
