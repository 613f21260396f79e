"""Local mode's SageMaker-shaped tree: hyperparameters.json as SageMaker writes it, read back by the job's parser."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from catalog import load_catalog
from training.datasets import prepare_channels
from training.environment import Hyperparameters, read_environment
from training.jobs.local_mode import (
    entry_point_command,
    exclusive,
    job_process_environment,
    train_local,
    write_job_tree,
)
from training.jobs.request import JobRequest, TrainingJobError, job_name_for, publish_package

JOB = "digits-demo-20261123-093000"


@pytest.fixture
def digits_tree(tmp_path: Path) -> tuple[Path, dict[str, str], dict]:
    """The job tree for the catalog's digits model with one override, and the SM_* environment pointing into it."""
    entry = load_catalog().model("digits")
    hyperparameters = JobRequest.create(
        entry, profile="demo", overrides={"epochs": 2}, job_name=JOB, work_dir=tmp_path / "job"
    ).hyperparameters
    channels = prepare_channels(entry, tmp_path / "prepared")
    work = tmp_path / "job"
    env = write_job_tree(work, job_name=JOB, hyperparameters=hyperparameters, channels=channels, processes=1)
    return work, env, hyperparameters


def test_hyperparameters_json_holds_json_encoded_strings_like_sagemaker(digits_tree) -> None:
    work, _, _ = digits_tree

    written = json.loads((work / "input" / "config" / "hyperparameters.json").read_text())

    assert all(isinstance(value, str) for value in written.values())
    assert written["epochs"] == "2"
    assert written["batch_size"] == "64"
    assert written["learning_rate"] == "0.002"
    assert written["seed"] == "7"
    assert written["model_name"] == '"digits"'
    assert written["profile"] == '"demo"'
    assert written["job_name"] == f'"{JOB}"'
    assert written["sagemaker_program"] == '"train.py"'
    assert written["sagemaker_container_log_level"] == "20"


def test_the_entry_points_parser_reads_back_what_local_mode_wrote(digits_tree) -> None:
    # given
    work, env, hyperparameters = digits_tree
    from_file = {key: value for key, value in env.items() if key != "SM_HPS"}  # the toolkit-less path

    # when
    via_sm_hps = read_environment(env)
    via_file = read_environment(from_file)

    # then
    expected = Hyperparameters(epochs=2, batch_size=64, learning_rate=2e-3, seed=7)
    assert via_sm_hps.training == via_file.training == expected
    assert via_sm_hps.model_name == via_file.model_name == "digits"
    assert via_sm_hps.profile == via_file.profile == "demo"
    assert via_sm_hps.job_name == via_file.job_name == JOB
    assert dict(via_sm_hps.hyperparameters) == hyperparameters
    assert {key: value for key, value in via_file.hyperparameters.items() if not key.startswith("sagemaker_")} == (
        hyperparameters
    )
    assert via_file.channels == {name: work / "input" / "data" / name for name in ("train", "validation", "test")}
    assert via_file.model_dir == work / "model"
    assert via_file.output_data_dir == work / "output" / "data"
    assert via_file.checkpoint_dir == work / "checkpoints"
    assert via_file.world_size == 1


def test_the_tree_has_sagemakers_layout_with_channels_copied_in(digits_tree) -> None:
    work, env, _ = digits_tree

    for channel in ("train", "validation", "test"):
        assert (work / "input" / "data" / channel / "data.npz").is_file()
        assert env[f"SM_CHANNEL_{channel.upper()}"] == str(work / "input" / "data" / channel)
    assert json.loads((work / "input" / "config" / "resourceconfig.json").read_text())["hosts"] == ["algo-1"]
    assert sorted(json.loads((work / "input" / "config" / "inputdataconfig.json").read_text())) == [
        "test",
        "train",
        "validation",
    ]
    assert json.loads(env["SM_CHANNELS"]) == ["test", "train", "validation"]
    assert [path.name for path in (work / "model").iterdir()] == []
    assert (work / "output" / "data").is_dir()


def test_a_new_run_starts_clean_but_keeps_checkpoints_to_resume(digits_tree, tmp_path: Path) -> None:
    # given: leftovers of a killed run
    work, _, hyperparameters = digits_tree
    (work / "checkpoints" / "last.pt").write_bytes(b"state")
    (work / "model" / "model.onnx").write_bytes(b"half-written")

    # when
    write_job_tree(work, job_name=JOB, hyperparameters=hyperparameters, channels={}, processes=1)

    # then
    assert (work / "checkpoints" / "last.pt").read_bytes() == b"state"
    assert not (work / "model" / "model.onnx").exists()
    assert not (work / "input" / "data" / "train").exists()


def test_several_processes_run_the_same_module_under_torchrun() -> None:
    single = entry_point_command(1)
    several = entry_point_command(2)

    assert single[1:] == ["-m", "training.train"]
    assert several[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in several
    assert several[-2:] == ["-m", "training.train"]


def test_job_names_are_valid_sagemaker_names() -> None:
    entry = load_catalog().model("sentiment")
    long_entry = entry.model_copy(update={"name": "x" * 80})

    assert job_name_for(entry, "demo").startswith("sentiment-demo-")
    assert len(job_name_for(long_entry, "full")) == 63


def test_publishing_replaces_the_previous_package_whole(tmp_path: Path) -> None:
    # given
    package_dir = tmp_path / "models" / "digits"
    package_dir.mkdir(parents=True)
    (package_dir / "stale.onnx").write_bytes(b"old")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "manifest.json").write_text("{}")
    (model_dir / "model.onnx").write_bytes(b"new")

    # when
    published = publish_package(model_dir, package_dir)

    # then
    assert published == package_dir
    assert sorted(path.name for path in package_dir.iterdir()) == ["manifest.json", "model.onnx"]
    assert [path.name for path in package_dir.parent.iterdir()] == ["digits"]


def test_a_job_that_leaves_no_manifest_publishes_nothing(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()

    with pytest.raises(TrainingJobError, match=r"no manifest\.json"):
        publish_package(tmp_path / "model", tmp_path / "models" / "digits")
    assert not (tmp_path / "models" / "digits").exists()


def test_a_second_job_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    entry = load_catalog().model("digits")

    job = JobRequest.create(entry, work_dir=tmp_path / "job", package_dir=tmp_path / "packages" / "digits")

    with exclusive(tmp_path / "job"), pytest.raises(TrainingJobError, match="another training job is running"):
        train_local(job)
    with exclusive(tmp_path / "job"):  # released again
        assert (tmp_path / "job" / ".lock").is_file()


def test_a_failing_job_raises_with_its_output_and_publishes_nothing(tmp_path: Path) -> None:
    # given: a typo in a hyperparameter, which the real entry point refuses
    entry = load_catalog().model("digits")
    job = JobRequest.create(
        entry,
        profile="demo",
        overrides={"epochz": 3},
        work_dir=tmp_path / "job",
        package_dir=tmp_path / "packages" / "digits",
    )

    # when / then
    with pytest.raises(TrainingJobError, match="exited with") as failure:
        train_local(job)
    assert "epochz" in str(failure.value)
    assert not (tmp_path / "packages" / "digits").exists()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_job_draws_a_bar_only_when_its_output_reaches_a_terminal(tmp_path: Path) -> None:
    # given
    job = JobRequest.create(load_catalog().model("digits"), work_dir=tmp_path / "job")

    # when
    piped = job_process_environment(job, {"SM_MODEL_DIR": "model"}, io.StringIO())
    shown = job_process_environment(job, {"SM_MODEL_DIR": "model"}, Terminal())

    # then: a pipe gets the metric lines SageMaker scrapes, a terminal a bar sized to it
    assert piped["TRAINING_PROGRESS"] == "lines"
    assert shown["TRAINING_PROGRESS"] == "bar"
    assert int(shown["COLUMNS"]) > 0
    assert piped["SM_MODEL_DIR"] == "model"
    assert piped["HF_HUB_OFFLINE"] == "1"


def test_verbose_brings_back_the_libraries_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "INFO")
    entry = load_catalog().model("digits")
    quiet = JobRequest.create(entry, work_dir=tmp_path / "job")
    verbose = JobRequest.create(entry, work_dir=tmp_path / "job", verbose=True)

    assert job_process_environment(quiet, {}, io.StringIO())["LOG_LEVEL"] == "INFO"  # the shell's own setting
    assert job_process_environment(verbose, {}, io.StringIO())["LOG_LEVEL"] == "DEBUG"
    assert verbose.environment["LOG_LEVEL"] == "DEBUG"
    assert "LOG_LEVEL" not in quiet.environment
