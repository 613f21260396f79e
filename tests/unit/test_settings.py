"""The environment is parsed once into Settings; a bad variable is named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from functions.runtime.settings import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.models_dir == Path("/var/task/models")
    assert settings.sagemaker_endpoints == {}
    assert settings.max_instances_for("anything") == 64
    assert settings.intra_op_threads == len(os.sched_getaffinity(0))
    assert settings.max_body_bytes == 6 * 1024 * 1024


def test_values_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "MODELS_DIR": "/opt/models",
            "SAGEMAKER_ENDPOINTS": '{"embeddings": "embeddings-endpoint"}',
            "MAX_INSTANCES": '{"sentiment": 64, "digits": 256}',
            "ORT_THREADS": "3",
            "BATCH_OUTPUT_PREFIX": "results",
            "BATCH_ROWS_PER_INFERENCE": "32",
        }
    )
    assert settings.models_dir == Path("/opt/models")
    assert settings.sagemaker_endpoints == {"embeddings": "embeddings-endpoint"}
    assert settings.max_instances_for("digits") == 256
    assert settings.max_instances_for("unlisted") == 64
    assert settings.intra_op_threads == 3
    assert settings.batch_output_prefix == "results/"
    assert settings.batch_rows_per_inference == 32
    assert Settings.from_env({"MAX_INSTANCES": "10"}).max_instances_for("any") == 10


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SAGEMAKER_ENDPOINTS": "embeddings=x"}, "SAGEMAKER_ENDPOINTS must be JSON"),
        ({"MAX_INSTANCES": "0"}, "max_instances"),
        ({"ORT_THREADS": "many"}, "ort_threads"),
    ],
)
def test_bad_values_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environ)


def test_to_environment_round_trips_every_field() -> None:
    # given settings that differ from every default
    settings = Settings(
        models_dir=Path("/opt/models"),
        versions_dir=Path("/opt/versions"),
        version_cache_size=3,
        sagemaker_endpoints={"embeddings": "endpoint-1"},
        max_instances={"sentiment": 8},
        ort_threads=2,
        batch_bucket="bucket",
        batch_input_prefix="in/",
        batch_output_prefix="out/",
        batch_rows_per_inference=16,
        length_bucketing=False,
        max_body_bytes=1024,
        service_name="svc",
        metrics_namespace="Ns",
        metrics_enabled=False,
        log_level="DEBUG",
        sagemaker_max_batch={"embeddings": 64},
        max_response_bytes=2048,
        function_timeout_s=20.0,
        capture_rates={"digits": 0.5},
        capture_inputs=["digits"],
        drift_thresholds={"digits": 0.3},
        drift_window_hours=6,
        monitoring_bucket="monitoring-bucket",
        capture_prefix="capture/",
        batch_shard_bytes=4096,
        batch_queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/batch",
    )
    assert all(getattr(settings, name) != field.default for name, field in Settings.model_fields.items())
    # when the stacks put them in a function's environment, then the function reads back the same settings
    assert Settings.from_env(settings.to_environment()) == settings
