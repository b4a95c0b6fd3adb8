"""configs/loki/loki.yaml. No Loki binary can be installed on the CI machine
(not in Debian, no image pull), so the file is checked against what Loki 3
requires for this setup: single binary on the filesystem, TSDB schema v13,
retention by the compactor, structured metadata, limits fitting 1 MiB batches."""

from __future__ import annotations

import re

from stack_helpers import REPO, load_yaml

LOKI = load_yaml(REPO / "configs" / "loki" / "loki.yaml")

TOP_LEVEL = {
    "auth_enabled", "server", "common", "schema_config", "storage_config", "ingester",
    "compactor", "limits_config", "query_range", "ruler", "analytics",
}


def _mb(value) -> float:
    if isinstance(value, (int, float)):
        return float(value) / (1 << 20)
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]i?B)", value).groups()
    return float(number) * {"KB": 1 / 1024, "KiB": 1 / 1024, "MB": 1, "MiB": 1, "GB": 1024, "GiB": 1024}[unit]


def test_only_known_top_level_blocks():
    # Loki refuses unknown fields at start-up.
    assert set(LOKI) <= TOP_LEVEL


def test_single_binary_on_filesystem():
    assert LOKI["auth_enabled"] is False
    assert LOKI["server"]["http_listen_port"] == 3100
    common = LOKI["common"]
    assert common["replication_factor"] == 1
    assert common["ring"]["kvstore"]["store"] == "inmemory"
    assert common["storage"]["filesystem"]["chunks_directory"].startswith("/loki/")


def test_tsdb_schema_v13():
    (period,) = LOKI["schema_config"]["configs"]
    assert (period["store"], period["schema"], period["object_store"]) == ("tsdb", "v13", "filesystem")
    assert period["index"]["period"] == "24h"
    assert LOKI["storage_config"]["tsdb_shipper"]["active_index_directory"].startswith("/loki/")


def test_90_day_retention_through_the_compactor():
    compactor = LOKI["compactor"]
    assert compactor["retention_enabled"] is True
    assert compactor["delete_request_store"] == "filesystem"  # required with retention in Loki 3
    assert LOKI["limits_config"]["retention_period"] == "2160h"


def test_structured_metadata_allowed():
    limits = LOKI["limits_config"]
    assert limits["allow_structured_metadata"] is True
    assert _mb(limits["max_structured_metadata_size"]) >= 64 / 1024
    assert limits["max_structured_metadata_entries_count"] >= 3  # trace_id, span_id, user_id


def test_limits_fit_1_mib_batches():
    limits = LOKI["limits_config"]
    batch_mb = 1.0
    # a whole batch must fit in the tenant's and one stream's burst, or it is refused with 429 forever
    assert limits["ingestion_burst_size_mb"] >= 4 * batch_mb
    assert limits["ingestion_rate_mb"] >= 4 * batch_mb
    assert _mb(limits["per_stream_rate_limit_burst"]) >= 4 * batch_mb
    assert _mb(limits["per_stream_rate_limit"]) >= batch_mb
    assert LOKI["server"]["grpc_server_max_recv_msg_size"] >= 4 * (1 << 20)
    # labels of pipelines/structured-json.yaml stay well inside Loki 3's 15
    assert limits["max_label_names_per_series"] == 15


def test_compose_mounts_this_file():
    compose = load_yaml(REPO / "docker-compose.yaml")
    loki = compose["services"]["loki"]
    assert "./configs/loki/loki.yaml:/etc/loki/loki.yaml:ro" in loki["volumes"]
    assert loki["command"] == ["-config.file=/etc/loki/loki.yaml"]
