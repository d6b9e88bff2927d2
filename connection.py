"""The one way tidings connects to Temporal: envconfig, pydantic payloads (encrypted with
the configured keys, see tidings.codec), search attributes."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.api.batch.v1 import BatchOperationSignal
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.workflowservice.v1 import StartBatchOperationRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from tidings import naming
from tidings.codec import data_converter
from tidings.errors import TidingsError
from tidings.settings import Settings
from tidings.telemetry import tracing_interceptors

DEFAULT_ADDRESS = "localhost:7233"


async def connect(
    settings: Settings | None = None,
    *,
    address: str | None = None,
    namespace: str | None = None,
    profile: str | None = None,
    lazy: bool = False,
    runtime: Runtime | None = None,
) -> Client:
    """Connect as Temporal's envconfig says (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
    TEMPORAL_API_KEY, TLS settings, temporal.toml profiles); arguments win.
    Payloads are encrypted with `settings`' keys (default: from the environment).
    `lazy`: connect on the first call instead (a service that starts without Temporal).
    `runtime`: where the SDK's metrics go (a worker's Prometheus endpoint, telemetry.py);
    traces go where the OTEL_* variables say."""
    converter = data_converter(settings or Settings())
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config(profile=profile))
    if address:
        config["target_host"] = address
    if namespace:
        config["namespace"] = namespace
    config.setdefault("target_host", DEFAULT_ADDRESS)
    try:
        return await Client.connect(
            **config,
            data_converter=converter,
            lazy=lazy,
            runtime=runtime,
            interceptors=tracing_interceptors(),
        )
    except RuntimeError as err:
        raise TidingsError(
            f"cannot reach Temporal at {config['target_host']}: {err}. Start `tidings dev`, "
            "or point TEMPORAL_ADDRESS (or a temporal.toml profile) at your cluster"
        ) from err


def _index_type(kind: SearchAttributeIndexedValueType) -> IndexedValueType.ValueType:
    return IndexedValueType.ValueType(kind.value)


async def register_search_attributes(client: Client) -> None:
    """Add tidings' search attributes (dev and test servers; clusters do it once by hand)."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                key.name: _index_type(key.indexed_value_type) for key in naming.SEARCH_ATTRIBUTES
            },
        )
    )


async def missing_search_attributes(client: Client) -> list[str]:
    """The tidings search attributes the namespace lacks (journeys would stall without them)."""
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    known = set(response.custom_attributes) | set(response.system_attributes)
    return [key.name for key in naming.SEARCH_ATTRIBUTES if key.name not in known]


_TYPE_NAMES = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
}


def search_attribute_flags() -> list[str]:
    """`--search-attribute` flags for `temporal server start-dev`."""
    flags = []
    for key in naming.SEARCH_ATTRIBUTES:
        flags += ["--search-attribute", f"{key.name}={_TYPE_NAMES[key.indexed_value_type]}"]
    return flags


# A rate-limited queue spread over partitions (four by default) is limited
# per partition, and the partitions' tokens reach pollers in clumps: a burst
# then exceeds the limit in its busiest second. tidings' queues are far below
# a partition's throughput, so one partition each costs nothing.
SINGLE_PARTITION = (
    "matching.numTaskqueueReadPartitions=1",
    "matching.numTaskqueueWritePartitions=1",
)


def dynamic_config_flags() -> list[str]:
    """`--dynamic-config-value` flags for `temporal server start-dev`."""
    return [flag for value in SINGLE_PARTITION for flag in ("--dynamic-config-value", value)]


def create_commands(namespace: str = "default") -> list[str]:
    """The CLI command that registers the search attributes on a cluster.

    Every `--name` needs its own `--type`: the CLI pairs them by position and
    registers only as many names as it is given types."""
    pairs = (
        f"--name {key.name} --type {_TYPE_NAMES[key.indexed_value_type]}"
        for key in naming.SEARCH_ATTRIBUTES
    )
    return [f"temporal operator search-attribute create --namespace {namespace} " + " ".join(pairs)]


async def signal_waiting(client: Client, waiting_for: str, *, reason: str) -> str:
    """Send `recheck` to every running journey whose WaitingFor is `waiting_for`, in
    one server-side batch operation (not one signal per workflow from here); returns
    the batch job's id (`temporal batch describe --job-id`)."""
    job_id = f"tidings-recheck-{uuid.uuid4().hex}"
    query = (
        f'WorkflowType="{naming.JOURNEY_WORKFLOW}" AND '
        f'{naming.WAITING_FOR.name}="{waiting_for}" AND ExecutionStatus="Running"'
    )
    await client.workflow_service.start_batch_operation(
        StartBatchOperationRequest(
            namespace=client.namespace,
            visibility_query=query,
            job_id=job_id,
            reason=reason[:200],
            signal_operation=BatchOperationSignal(
                signal=naming.RECHECK_SIGNAL, identity=client.identity
            ),
        )
    )
    return job_id
