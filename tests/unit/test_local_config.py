"""The local stack's own settings, and the rule Lambda applies to an SQS event source before it exists."""

from __future__ import annotations

import os

import pytest

from catalog import load_catalog
from local.config import LocalConfig, LocalConfigError

PLATFORM = load_catalog().platform


def test_timeouts_come_from_the_environment() -> None:
    config = LocalConfig.from_env({"LOCAL_VISIBILITY_TIMEOUT": "5", "LOCAL_BATCH_TIMEOUT": "4", "LOG_LEVEL": "DEBUG"})
    assert (config.queue_visibility_timeout_s(PLATFORM), config.batch_function_timeout_s(PLATFORM)) == (5, 4)
    assert config.log_level == "DEBUG"
    assert LocalConfig.from_env({}).batch_function_timeout_s(PLATFORM) == PLATFORM.batch_function_timeout_s


def test_a_queue_that_would_redeliver_a_running_message_is_refused_like_lambda_does() -> None:
    # the platform's own setting (6x the timeout) and an equal pair are accepted
    LocalConfig().check_event_source(PLATFORM)
    LocalConfig(visibility_timeout_s=3, batch_timeout_s=3).check_event_source(PLATFORM)
    # a visibility timeout below the function's timeout is not
    with pytest.raises(LocalConfigError, match="visibility timeout: 2 seconds is less than Function timeout: 3"):
        LocalConfig(visibility_timeout_s=2, batch_timeout_s=3).check_event_source(PLATFORM)
    with pytest.raises(LocalConfigError, match="LOCAL_BATCH_TIMEOUT"):
        LocalConfig(visibility_timeout_s=5).check_event_source(PLATFORM)


def test_bad_values_are_named() -> None:
    with pytest.raises(LocalConfigError, match="LOCAL_BATCH_TIMEOUT"):
        LocalConfig.from_env({"LOCAL_BATCH_TIMEOUT": "soon"})


def test_batch_workers_default_to_the_cpus_each_with_its_share_of_them() -> None:
    cpus = len(os.sched_getaffinity(0))
    default = LocalConfig.from_env({})
    assert (default.batch_workers, default.batch_worker_threads) == (cpus, max(1, cpus // cpus))
    given = LocalConfig.from_env({"LOCAL_BATCH_CONCURRENCY": "3", "LOCAL_BATCH_THREADS": "2"})
    assert (given.batch_workers, given.batch_worker_threads) == (3, 2)
    with pytest.raises(LocalConfigError, match="LOCAL_BATCH_CONCURRENCY"):
        LocalConfig.from_env({"LOCAL_BATCH_CONCURRENCY": "many"})
