"""The run configuration: defaults, params files, overrides, validation, secret masking."""

import json

import pytest

from rrlab.config import RunConfig, Secret, from_environment, load_config
from rrlab.exceptions import ConfigError


def test_defaults_are_the_seed_harness_defaults() -> None:
    config = load_config()
    assert [(p.name, p.duration_s, p.target_throughput) for p in config.phases] == [
        ("warmup", 30, 1000),
        ("baseline", 60, 5000),
    ]
    assert config.producer.workers == 1
    assert config.producer.insert_update_ratio == 0.8
    assert config.producer.batch_size == 500
    assert config.producer.payload_size_kb == 1
    consumer = config.consumer
    assert (consumer.flush_batch_size, consumer.flush_interval_ms) == (50, 100)
    assert (consumer.max_flush_concurrency, consumer.mock_delay_ms) == (100, 0)
    assert (consumer.slot_name, consumer.publication_name) == (
        "profiling_slot",
        "profiling_publication",
    )


def test_seed_camel_case_json_is_accepted(tmp_path) -> None:
    seed = {
        "runName": "seed",
        "phases": [{"name": "peak", "durationSec": 5, "targetThroughput": 20000}],
        "producer": {
            "enabled": True,
            "workerCount": 2,
            "insertUpdateRatio": 0.7,
            "batchSize": 100,
            "payloadSizeKB": 2,
        },
        "consumer": {
            "flushBatchSize": 100,
            "flushIntervalMs": 250,
            "maxFlushConcurrency": 4,
            "useMockClickhouse": True,
            "mockClickhouseDelay": 5,
            "slotName": "s1",
            "publicationName": "p1",
        },
        "infrastructure": {
            "databaseUrl": "postgresql://u:pw@h/db",
            "profilingDatabaseName": "prof",
        },
    }
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({k: v for k, v in seed.items() if k != "runName"}))
    config = load_config(path, {"output.run_name": "seed"})
    assert config.phases[0].duration_s == 5 and config.phases[0].target_throughput == 20000
    assert (config.producer.workers, config.producer.payload_size_kb) == (2, 2)
    assert config.consumer.flush_batch_size == 100 and config.consumer.mock_delay_ms == 5
    assert config.clickhouse.sink == "mock"
    assert config.postgres.database_name == "prof"
    assert config.postgres.database_url == Secret("postgresql://u:pw@h/db")


def test_yaml_file_then_overrides(tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("consumer:\n  flush_batch_size: 100\nproducer:\n  workers: 2\n")
    config = load_config(path, {"consumer.flush_batch_size": 7, "producer": {"batch_size": 10}})
    assert config.consumer.flush_batch_size == 7
    assert config.producer.workers == 2 and config.producer.batch_size == 10


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"consumer.flush_batch_size": 0}, "consumer.flush_batch_size = 0 is out of range"),
        ({"consumer.flush_batch_size": "many"}, "must be a number, got 'many'"),
        ({"consumer.flush_batch_size": 2.5}, "must be a whole number"),
        ({"consumer.flush_btach_size": 1}, "Unknown setting 'flush_btach_size' in consumer"),
        ({"bogus": 1}, "Unknown setting 'bogus'"),
        ({"phases": []}, "phases is empty"),
        (
            {"phases": [{"name": "a", "duration_s": 1, "target_throughput": -5}]},
            "phases[0].target_throughput = -5 is out of range",
        ),
        (
            {"phases": [{"name": "a", "duration_s": 0, "target_throughput": 5}]},
            "phases[0].duration_s = 0 is out of range",
        ),
        ({"phases": [{"name": "a", "duration_s": 1, "target_throughput": 10**9}]}, "out of range"),
        ({"phases": [{"name": "a", "duration_s": 1}]}, "needs 'target_throughput'"),
        ({"clickhouse.sink": "duckdb"}, "Choose one of: chdb, clickhouse, mock"),
        ({"clickhouse.sink": "clickhouse"}, "needs a server: set CLICKHOUSE_URL"),
        ({"consumer.slot_name": "slot; DROP TABLE x"}, "consumer.slot_name"),
        ({"postgres.database_name": "Prof-DB"}, "postgres.database_name"),
        ({"producer.delete_ratio": 0.5}, "producer.delete_ratio = 0.5"),
        ({"profiling.line_targets": ["not a target"]}, "is not module:function"),
        ({"output.verbose": "perhaps"}, "must be true or false"),
    ],
)
def test_bad_values_are_refused_with_the_key_and_the_allowed(overrides, fragment) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(None, overrides)
    assert fragment in str(excinfo.value)


def test_params_file_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listing)


def test_secrets_are_masked_in_repr_and_dict() -> None:
    config = load_config(
        None,
        {
            "postgres.database_url": "postgresql://alice:hunter2@db:5432/x",
            "clickhouse.clickhouse_url": "https://ch:8443?username=bob&password=swordfish",
        },
    )
    text = repr(config) + json.dumps(config.to_dict()) + str(config.postgres.database_url)
    assert "hunter2" not in text and "swordfish" not in text
    assert "alice:***@db" in text and "password=***" in text
    assert config.postgres.database_url.reveal() == "postgresql://alice:hunter2@db:5432/x"


def test_with_overrides_keeps_secrets_usable() -> None:
    config = load_config(None, {"postgres.database_url": "postgresql://a:pw@h/d"})
    again = config.with_overrides({"producer.workers": 3})
    assert again.postgres.database_url.reveal() == "postgresql://a:pw@h/d"
    assert isinstance(again, RunConfig) and again.producer.workers == 3


def test_environment_urls_fill_missing_settings() -> None:
    config = from_environment(load_config(), {"DATABASE_URL": "postgresql://u:p@h/d"})
    assert config.postgres.database_url.reveal() == "postgresql://u:p@h/d"
    assert config.clickhouse.clickhouse_url is None
