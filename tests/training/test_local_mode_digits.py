"""End to end in local mode: the digits model trained by the real entry point in a subprocess, as `make models` does."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from catalog import load_catalog
from functions.runtime.package import load_package
from training.datasets import prepare_channels, read_images
from training.jobs.local_mode import train_local
from training.jobs.request import JobRequest
from training.report import CURVES_FILE, REPORT_FILE

pytestmark = pytest.mark.slow
# The catalog's 30 epochs are `make models`' job; a few epochs prove the same path in a fraction of the time.
FAST = {"epochs": 4}


@pytest.fixture(scope="module")
def digits_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float, str]:
    """(package folder, job work folder, wall seconds, job output) of one short demo-profile digits job."""
    root = tmp_path_factory.mktemp("digits-local")
    output = io.StringIO()
    started = time.perf_counter()
    package = train_local(
        JobRequest.create(
            load_catalog().model("digits"),
            profile="demo",
            overrides=FAST,
            work_dir=root / "job",
            package_dir=root / "models" / "digits",
        ),
        stream=output,
    )
    return package, root / "job", time.perf_counter() - started, output.getvalue()


def test_the_job_leaves_a_verified_package_where_asked(digits_job) -> None:
    package_dir, _, wall, _ = digits_job

    package = load_package(package_dir)

    print(f"digits local-mode job: {wall:.1f} s")
    assert package_dir.name == "digits"
    assert {"manifest.json", "model.onnx"} <= {path.name for path in package_dir.iterdir()}
    assert package.manifest.parity.passed is True
    assert package.manifest.task == "image-classification"
    assert package.manifest.source["profile"] == "demo"
    assert package.manifest.source["hyperparameters"]["epochs"] == FAST["epochs"]
    assert package.manifest.metrics["test_accuracy"] >= 0.9


def test_the_shipped_graph_classifies_the_held_out_digits(digits_job, tmp_path: Path) -> None:
    # given: the same test split the job saw, fed as the runtime feeds it (raw 0..16 divided by pixel_scale)
    package = load_package(digits_job[0])
    test_channel = prepare_channels(load_catalog().model("digits"), tmp_path)["test"]
    images, labels = read_images(test_channel)
    scale = package.manifest.preprocessing.pixel_scale
    assert scale is not None

    # when
    session = onnxruntime.InferenceSession(str(package.graph_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"pixels": (images / scale)[:, None, :, :].astype(np.float32)})

    # then
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.9
    assert accuracy == pytest.approx(package.manifest.metrics["test_accuracy"], abs=0.01)


def test_the_output_dir_has_the_evaluation_report_and_training_curves(digits_job) -> None:
    _, work, _, _ = digits_job
    output = work / "output" / "data"

    report = json.loads((output / REPORT_FILE).read_text())

    assert (output / CURVES_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["model"] == "digits"
    assert "confusion_matrix" in json.dumps(report)
    assert "precision" in json.dumps(report)


def test_the_job_says_what_it_does_and_no_more(digits_job) -> None:
    package_dir, _, _, log = digits_job
    manifest = load_package(package_dir).manifest

    # the libraries' chatter stays out (`--verbose` / LOG_LEVEL=DEBUG brings it back)
    assert "Quantization parameters" not in log
    assert "symbolic shape inference" not in log
    assert "export step" not in log
    # progress as metric lines (the output is not a terminal), and one summary line for the package
    assert "train_loss=" in log
    (summary,) = [line for line in log.splitlines() if "package written to" in line]
    test_accuracy = manifest.metrics["test_accuracy"]
    assert f"digits {manifest.version} {manifest.graph.precision}, test accuracy {test_accuracy:.4f}" in summary
    assert "parity max abs diff" in summary
    assert "=" not in summary.partition("package written to")[2]  # SageMaker scrapes metric lines only


def test_two_processes_train_under_torchrun_on_gloo(tmp_path: Path) -> None:
    # given: what SageMaker's torch_distributed launches on a multi-GPU host, here as two CPU processes
    output = io.StringIO()

    # when
    package_dir = train_local(
        JobRequest.create(
            load_catalog().model("digits"),
            profile="demo",
            overrides={"epochs": 1},
            work_dir=tmp_path / "job",
            package_dir=tmp_path / "models" / "digits",
            processes=2,
        ),
        stream=output,
    )

    # then: one package, written by rank 0, from a job that really ran with two ranks
    log = output.getvalue()
    assert "world_size=2" in log
    assert log.count("package written to") == 1
    assert load_package(package_dir).manifest.parity.passed is True
