"""The entry point: scrape-able metric lines, checkpoints, resume after a kill, DDP on gloo, and digits accuracy."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from catalog import ROOT, load_catalog
from functions.runtime.package import read_manifest
from training.datasets import prepare_channels
from training.environment import read_environment
from training.job_logging import METRIC_DEFINITIONS, StepProgress, log_metrics
from training.jobs.sagemaker_job import build_source_tarball
from training.report import TrainingCurves
from training.tasks.base import load_task
from training.train import CHECKPOINT_FILE, fit, linear_schedule, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digit_channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return prepare_channels(load_catalog().model("digits"), tmp_path_factory.mktemp("digits"))


def job_environment(channels: dict[str, Path], root: Path, hyperparameters: dict) -> dict[str, str]:
    """What local mode gives the entry point: SageMaker's variables pointing into a temporary tree."""
    inherited = {key: value for key, value in os.environ.items() if key not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    return {
        **inherited,
        "OMP_NUM_THREADS": "1",
        "SM_HPS": json.dumps({"model_name": "digits", "job_name": "digits-test", **hyperparameters}),
        **{f"SM_CHANNEL_{name.upper()}": str(folder) for name, folder in channels.items()},
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DATA_DIR": str(root / "output"),
        "SM_CHECKPOINT_DIR": str(root / "checkpoints"),
    }


def test_metric_lines_are_scraped_by_the_published_regexes(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="training"):
        log_metrics(step=40, epoch=0, train_loss=0.123456, learning_rate=4.5e-05)
        log_metrics(val_loss=0.61, val_accuracy=0.8123, test_loss=0.6, test_accuracy=0.8, baseline_test_accuracy=0.75)
    lines = "\n".join(caplog.messages)

    scraped = {
        definition["Name"]: float(match.group(1))
        for definition in METRIC_DEFINITIONS
        if (match := re.search(definition["Regex"], lines))
    }

    assert scraped == {
        "train_loss": 0.123456,
        "learning_rate": 4.5e-05,
        "val_loss": 0.61,
        "val_accuracy": 0.8123,
        "test_loss": 0.6,
        "test_accuracy": 0.8,
        "baseline_test_accuracy": 0.75,
    }


@pytest.mark.parametrize(("progress", "level"), [("lines", logging.INFO), ("bar", logging.DEBUG)])
def test_a_bar_replaces_the_metric_lines_on_a_terminal(
    progress: str, level: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given: a job whose output is a pipe (SageMaker, CI) or a terminal
    env = read_environment({"SM_CHECKPOINT_DIR": str(tmp_path), "TRAINING_PROGRESS": progress})

    # when
    with caplog.at_level(logging.DEBUG, logger="training"):
        steps = StepProgress(env, total_steps=20, initial=0)
        with steps.shown():
            steps.advance()
            steps.report(step=1, epoch=0, train_loss=0.5, learning_rate=1e-3)
            drawn = not steps.bar.disable

    # then: the same scrape-able line, at INFO only where no bar shows progress
    assert [(record.levelno, record.getMessage()) for record in caplog.records] == [
        (level, "step=1 epoch=0 train_loss=0.5 learning_rate=0.001")
    ]
    assert drawn is (progress == "bar")


def test_schedule_warms_up_then_decays_to_zero() -> None:
    factor = linear_schedule(warmup_steps=10, total_steps=100)

    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == 0.0


def test_checkpoint_restores_model_optimiser_schedule_and_random_state(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(2, 10))
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    curves = TrainingCurves(train_loss=[(1, 0.5)])
    path = tmp_path / CHECKPOINT_FILE
    save_checkpoint(path, model_name="m", model=model, optimizer=optimizer, scheduler=scheduler, step=1, curves=curves)
    expected_weights, expected_draw = model.weight.detach().clone(), torch.rand(3)
    expected_numpy_keys = np.random.get_state()[1].tolist()
    np.random.rand(5)  # moves the state on; the checkpoint must bring it back

    with torch.no_grad():
        model.weight.zero_()
    fresh_optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    fresh_scheduler = torch.optim.lr_scheduler.LambdaLR(fresh_optimizer, linear_schedule(2, 10))
    progress = load_checkpoint(path, model_name="m", model=model, optimizer=fresh_optimizer, scheduler=fresh_scheduler)

    assert progress.step == 1
    assert progress.curves == curves
    assert torch.equal(model.weight, expected_weights)
    assert fresh_scheduler.last_epoch == 1
    assert fresh_optimizer.state_dict()["state"][0]["step"] == 1
    assert torch.equal(torch.rand(3), expected_draw)
    assert np.random.get_state()[1].tolist() == expected_numpy_keys
    assert not path.with_suffix(".partial").exists()
    with pytest.raises(RuntimeError, match="belongs to model 'm'"):
        load_checkpoint(path, model_name="other", model=model, optimizer=fresh_optimizer, scheduler=fresh_scheduler)


class RunsCode:
    """What a tampered checkpoint synced from S3 could hold: an object whose unpickling runs a command."""

    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(2, 10))
    path = tmp_path / CHECKPOINT_FILE
    torch.save({"model_name": "m", "payload": RunsCode()}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(path, model_name="m", model=model, optimizer=optimizer, scheduler=scheduler)


def test_digits_cnn_reaches_097_with_the_catalog_setting(digit_channels: dict[str, Path], tmp_path: Path) -> None:
    # given: the catalog's full hyperparameters and the real channels
    entry = load_catalog().model("digits")
    env = read_environment(
        {
            "SM_HPS": json.dumps({"model_name": "digits", **entry.hyperparameters}),
            "SM_CHECKPOINT_DIR": str(tmp_path),
            **{f"SM_CHANNEL_{name.upper()}": str(folder) for name, folder in digit_channels.items()},
        }
    )
    task = load_task(entry, env.training, env.channels, tmp_path)
    torch.manual_seed(env.training.seed)
    model = task.build_model()

    # when
    curves = fit(task, model, env.training, env, torch.device("cpu"))
    evaluation = task.evaluate(model, "test", torch.device("cpu"))

    # then
    assert evaluation is not None
    assert evaluation.accuracy >= 0.97
    assert len(curves.validation) == entry.hyperparameters["epochs"]
    assert curves.train_loss[-1][1] < curves.train_loss[0][1] / 10


def test_killed_job_resumes_from_its_checkpoint(digit_channels: dict[str, Path], tmp_path: Path) -> None:
    # given: a job killed right after its first checkpoint (a line only a verbose job writes)
    env = job_environment(
        digit_channels, tmp_path, {"epochs": 3, "batch_size": 16, "checkpoint_every": 20, "learning_rate": 0.002}
    )
    env["LOG_LEVEL"] = "DEBUG"
    first = subprocess.Popen(
        [sys.executable, "-m", "training.train"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert first.stdout is not None
    for line in first.stdout:
        if "checkpoint saved at step=" in line:
            first.send_signal(signal.SIGKILL)
            break
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    assert not (tmp_path / "model" / "manifest.json").exists()

    # when: restarted with the same checkpoint dir, as SageMaker script mode runs it: `python train.py` (the
    # launcher) in the extracted source tarball (sagemaker_program=train.py)
    code = tmp_path / "code"
    with tarfile.open(build_source_tarball(tmp_path / "sourcedir.tar.gz"), "r:gz") as tar:
        tar.extractall(code, filter="data")
    second = subprocess.run(
        [sys.executable, "train.py"],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    # then: it continues from that step and finishes
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    resumed = re.search(r"resumed from checkpoint .* at step=(\d+)", second.stdout)
    assert resumed, second.stdout[-3000:]
    start = int(resumed.group(1))
    total = int(re.search(r"total_steps=(\d+)", second.stdout).group(1))  # type: ignore[union-attr]
    assert 0 < start < total
    assert start % 20 == 0
    logged_steps = [int(step) for step in re.findall(r"step=(\d+) epoch=\d+ train_loss=", second.stdout)]
    assert logged_steps
    assert min(logged_steps) > start
    assert max(logged_steps) == total
    manifest = read_manifest(tmp_path / "model")
    assert manifest.parity.passed is True
    assert manifest.source["job_name"] == "digits-test"
    report = json.loads((tmp_path / "output" / "evaluation.json").read_text())
    assert set(report["splits"]) == {"validation", "test"}
    assert (tmp_path / "output" / "training_curves.png").read_bytes().startswith(b"\x89PNG")


def test_two_processes_on_gloo_train_one_model(digit_channels: dict[str, Path], tmp_path: Path) -> None:
    # given: torchrun with two CPU processes (WORLD_SIZE=2), as SageMaker's torch_distributed launches them
    env = job_environment(
        digit_channels, tmp_path, {"epochs": 1, "batch_size": 32, "max_train_samples": 512, "log_every": 2}
    )

    # when
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "training.train"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    # then: each rank trained on half the data, and only rank 0 wrote
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "world_size=2 steps_per_epoch=8 total_steps=8" in output  # 512 rows / 2 ranks / 32 per batch
    assert output.count("package written to") == 1
    assert len(re.findall(r"\btest_accuracy=", output)) == 1
    assert read_manifest(tmp_path / "model").parity.passed is True
    assert sorted(path.name for path in (tmp_path / "output").iterdir()) == ["evaluation.json", "training_curves.png"]
    assert [path.name for path in (tmp_path / "checkpoints").iterdir()] == [CHECKPOINT_FILE]
