"""One OTLP `Resource` to the columns every store row repeats.

Takes a protobuf `Resource` and the receiver limits; gives a `ResourceInfo` with the resource
attributes as a dict and as JSON, `service_name`, the Kubernetes columns and the capture
source the resource declares. Raises `RejectedItemError` when the resource itself breaks a limit,
which rejects every item under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collector.otlp.limits import ReceiverLimits
from collector.otlp.values import attributes, json_text, scalar_text

#: Values of `infersight.source` the store knows; anything else is ignored.
SOURCES = frozenset({"sdk", "ebpf", "both"})


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """The per-resource columns, computed once per `Resource*` envelope."""

    attributes: dict[str, Any]
    json: bytes
    service_name: str | None
    k8s_namespace: str | None
    k8s_pod: str | None
    k8s_node: str | None
    source: str | None


def resource_info(resource: Any, limits: ReceiverLimits) -> ResourceInfo:
    """Decode `resource` (a `opentelemetry.proto.resource.v1.Resource`)."""
    attrs = attributes(resource.attributes, limits.max_attributes, limits.max_value_depth)
    source = attrs.get("infersight.source")
    return ResourceInfo(
        attributes=attrs,
        json=json_text(attrs),
        service_name=scalar_text(attrs.get("service.name")),
        k8s_namespace=scalar_text(attrs.get("k8s.namespace.name")),
        k8s_pod=scalar_text(attrs.get("k8s.pod.name")),
        k8s_node=scalar_text(attrs.get("k8s.node.name")),
        source=source if isinstance(source, str) and source in SOURCES else None,
    )
