"""GenAI client and server metrics of captured calls, through the OpenTelemetry SDK.

Takes in: an OTel `Meter`, then one `InferenceCall` with its role (and the workload) per call.
Gives out: the semantic-convention histograms, created with the helpers of
`opentelemetry.semconv._incubating.metrics.gen_ai_metrics`:

* calls a node's process made (CLIENT): `gen_ai.client.operation.duration`,
  `gen_ai.client.token.usage` (`gen_ai.token.type` input / output; only when the wire carried the
  count), `gen_ai.client.operation.time_to_first_chunk` and
  `gen_ai.client.operation.time_per_output_chunk` (one sample per chunk after the first; streams);
* calls a node's inference server answered (SERVER): `gen_ai.server.request.duration`,
  `gen_ai.server.time_to_first_token` (successful streams) and
  `gen_ai.server.time_per_output_token` = (duration - TTFT) / (output tokens - 1).

Attributes: `gen_ai.operation.name`, `gen_ai.provider.name`, request and response model,
`server.address`/`server.port`, `error.type` on durations of failed calls, and the pod
(`k8s.namespace.name`, `k8s.pod.name`) when known. `genai_views()` gives the conventions'
advisory bucket boundaries as SDK views.
"""

from __future__ import annotations

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
from opentelemetry.semconv._incubating.attributes import k8s_attributes
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm
from opentelemetry.semconv.attributes import error_attributes, server_attributes
from opentelemetry.util.types import AttributeValue

from agent.capture.exchange import Role
from agent.genai.call import InferenceCall
from agent.k8s.resolver import Workload
from agent.otel.buckets import (
    DURATION_BUCKETS_S,
    TOKEN_BUCKETS,
    TPOT_BUCKETS_S,
    TTFT_BUCKETS_S,
)


def genai_views() -> list[View]:
    """Views that give each GenAI histogram its advisory bucket boundaries."""
    by_name = {
        gm.GEN_AI_CLIENT_OPERATION_DURATION: DURATION_BUCKETS_S,
        gm.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK: DURATION_BUCKETS_S,
        gm.GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK: DURATION_BUCKETS_S,
        gm.GEN_AI_CLIENT_TOKEN_USAGE: TOKEN_BUCKETS,
        gm.GEN_AI_SERVER_REQUEST_DURATION: DURATION_BUCKETS_S,
        gm.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN: TTFT_BUCKETS_S,
        gm.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN: TPOT_BUCKETS_S,
    }
    return [
        View(
            instrument_name=name,
            aggregation=ExplicitBucketHistogramAggregation(boundaries=[float(b) for b in bounds]),
        )
        for name, bounds in by_name.items()
    ]


def metric_attributes(call: InferenceCall, workload: Workload | None) -> dict[str, AttributeValue]:
    """The attributes every GenAI metric point of this call carries."""
    attrs: dict[str, AttributeValue] = {
        ga.GEN_AI_OPERATION_NAME: call.operation,
        ga.GEN_AI_PROVIDER_NAME: call.provider,
    }
    if call.request_model:
        attrs[ga.GEN_AI_REQUEST_MODEL] = call.request_model
    if call.response_model:
        attrs[ga.GEN_AI_RESPONSE_MODEL] = call.response_model
    if call.server_address:
        attrs[server_attributes.SERVER_ADDRESS] = call.server_address
        if call.server_port:
            attrs[server_attributes.SERVER_PORT] = call.server_port
    if workload is not None and workload.pod:
        attrs[k8s_attributes.K8S_NAMESPACE_NAME] = workload.namespace or ""
        attrs[k8s_attributes.K8S_POD_NAME] = workload.pod
    return attrs


class GenAiMetrics:
    """The seven GenAI histograms and how one call is recorded in them."""

    def __init__(self, meter: Meter) -> None:
        self.client_duration = gm.create_gen_ai_client_operation_duration(meter)
        self.client_tokens = gm.create_gen_ai_client_token_usage(meter)
        self.client_ttfc = gm.create_gen_ai_client_operation_time_to_first_chunk(meter)
        self.client_tpoc = gm.create_gen_ai_client_operation_time_per_output_chunk(meter)
        self.server_duration = gm.create_gen_ai_server_request_duration(meter)
        self.server_ttft = gm.create_gen_ai_server_time_to_first_token(meter)
        self.server_tpot = gm.create_gen_ai_server_time_per_output_token(meter)

    def record(self, call: InferenceCall, role: Role, workload: Workload | None = None) -> None:
        """Record one call on the client or the server side."""
        attrs = metric_attributes(call, workload)
        with_error = dict(attrs)
        if call.error_type:
            with_error[error_attributes.ERROR_TYPE] = call.error_type
        if role is Role.SERVER:
            self._record_server(call, attrs, with_error)
        else:
            self._record_client(call, attrs, with_error)

    def _record_client(
        self,
        call: InferenceCall,
        attrs: dict[str, AttributeValue],
        with_error: dict[str, AttributeValue],
    ) -> None:
        if call.duration_s is not None:
            self.client_duration.record(call.duration_s, with_error)
        for kind, count in (("input", call.input_tokens), ("output", call.output_tokens)):
            if count is not None:
                self.client_tokens.record(count, {**attrs, ga.GEN_AI_TOKEN_TYPE: kind})
        if call.streaming and call.time_to_first_chunk_s is not None:
            self.client_ttfc.record(call.time_to_first_chunk_s, attrs)
        if call.streaming:
            for gap_s in call.time_per_output_chunk_s:
                self.client_tpoc.record(gap_s, attrs)

    def _record_server(
        self,
        call: InferenceCall,
        attrs: dict[str, AttributeValue],
        with_error: dict[str, AttributeValue],
    ) -> None:
        if call.duration_s is not None:
            self.server_duration.record(call.duration_s, with_error)
        if call.error_type or not call.streaming or call.time_to_first_chunk_s is None:
            return
        ttft_s = call.time_to_first_chunk_s
        self.server_ttft.record(ttft_s, attrs)
        out = call.output_tokens
        if call.duration_s is not None and out is not None and out > 1:
            self.server_tpot.record(max(call.duration_s - ttft_s, 0.0) / (out - 1), attrs)
