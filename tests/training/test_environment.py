"""The SageMaker training-toolkit contract as the entry point reads it: hyperparameters, channels, paths, ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.environment import (
    DEFAULT_CHECKPOINT_DIR,
    DEFAULT_MODEL_DIR,
    DEFAULT_OUTPUT_DATA_DIR,
    ContractError,
    Hyperparameters,
    read_environment,
)


def write_hyperparameters(config_dir: Path, values: dict[str, str]) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "hyperparameters.json").write_text(json.dumps(values))


def test_hyperparameters_json_holds_strings_as_sagemaker_writes_them(tmp_path: Path) -> None:
    # given: every value a string, JSON-encoded by the SDK or raw from boto3
    write_hyperparameters(
        tmp_path,
        {
            "model_name": '"sentiment"',
            "profile": "demo",
            "epochs": "3",
            "learning_rate": "5e-05",
            "max_steps": "450",
            "sagemaker_program": '"train.py"',
        },
    )

    # when
    env = read_environment({"SM_INPUT_CONFIG_DIR": str(tmp_path)})

    # then
    assert env.model_name == "sentiment"
    assert env.profile == "demo"
    assert env.hyperparameters["epochs"] == 3
    training = env.training
    assert (training.epochs, training.max_steps, training.learning_rate) == (3, 450, 5e-05)
    assert training.batch_size == Hyperparameters().batch_size


def test_sm_hps_wins_over_the_file(tmp_path: Path) -> None:
    write_hyperparameters(tmp_path, {"model_name": '"digits"', "epochs": "30"})

    env = read_environment(
        {"SM_INPUT_CONFIG_DIR": str(tmp_path), "SM_HPS": json.dumps({"model_name": "digits", "epochs": 2})}
    )

    assert env.training.epochs == 2


def test_every_path_and_rank_can_be_overridden(tmp_path: Path) -> None:
    train, validation = tmp_path / "train", tmp_path / "validation"
    train.mkdir()
    validation.mkdir()

    env = read_environment(
        {
            "SM_HPS": json.dumps({"model_name": "digits", "job_name": "digits-local-1"}),
            "SM_CHANNEL_TRAIN": str(train),
            "SM_CHANNEL_VALIDATION": str(validation),
            "SM_CHANNEL_TEST": str(tmp_path / "missing"),
            "SM_MODEL_DIR": str(tmp_path / "model"),
            "SM_OUTPUT_DATA_DIR": str(tmp_path / "output"),
            "SM_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
            "SM_CURRENT_HOST": "algo-2",
            "SM_NUM_GPUS": "4",
            "RANK": "3",
            "LOCAL_RANK": "1",
            "WORLD_SIZE": "8",
        }
    )

    assert dict(env.channels) == {"train": train, "validation": validation}  # a channel that is not there is absent
    assert (env.model_dir, env.output_data_dir, env.checkpoint_dir) == (
        tmp_path / "model",
        tmp_path / "output",
        tmp_path / "checkpoints",
    )
    assert (env.current_host, env.num_gpus, env.rank, env.local_rank, env.world_size) == ("algo-2", 4, 3, 1, 8)
    assert env.job_name == "digits-local-1"
    assert not env.is_main_process


def test_defaults_are_sagemakers_paths(tmp_path: Path) -> None:
    env = read_environment({"SM_INPUT_CONFIG_DIR": str(tmp_path)})

    assert (env.model_dir, env.output_data_dir, env.checkpoint_dir) == (
        DEFAULT_MODEL_DIR,
        DEFAULT_OUTPUT_DATA_DIR,
        DEFAULT_CHECKPOINT_DIR,
    )
    assert (env.rank, env.world_size, env.is_main_process) == (0, 1, True)
    assert env.profile == "full"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"learning_rte": 0.1}, "'learning_rte' is unknown"),
        ({"epochs": 2.5}, "'epochs': expected an integer"),
        ({"batch_size": "many"}, "'batch_size': expected int"),
    ],
)
def test_bad_hyperparameters_name_the_key(values: dict, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        Hyperparameters.from_mapping(values)


def test_model_name_is_required(tmp_path: Path) -> None:
    env = read_environment({"SM_HPS": json.dumps({"epochs": 1})})

    with pytest.raises(ContractError, match="model_name"):
        _ = env.model_name


def test_malformed_rank_is_refused() -> None:
    with pytest.raises(ContractError, match="WORLD_SIZE"):
        read_environment({"SM_HPS": "{}", "WORLD_SIZE": "two"})


def test_how_much_the_job_says_is_part_of_the_contract(tmp_path: Path) -> None:
    quiet = read_environment({"SM_INPUT_CONFIG_DIR": str(tmp_path), "TRAINING_PROGRESS": "lines"})
    verbose = read_environment({"SM_INPUT_CONFIG_DIR": str(tmp_path), "LOG_LEVEL": "DEBUG", "TRAINING_PROGRESS": "bar"})

    assert (quiet.log_level, quiet.progress_bar) == ("INFO", False)
    assert (verbose.log_level, verbose.progress_bar) == ("DEBUG", True)
    with pytest.raises(ContractError, match="TRAINING_PROGRESS"):
        read_environment({"SM_INPUT_CONFIG_DIR": str(tmp_path), "TRAINING_PROGRESS": "dots"})
