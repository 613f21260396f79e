"""The parity gate: every real case passes, and a graph that drifts from its module fails the export whole."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from functions.runtime.package import Manifest
from tests.training.conftest import DIGITS_SOURCE as SOURCE
from tests.training.conftest import perturbed
from training.export import export_onnx
from training.export_spec import ExportSpec
from training.packaging import build_package
from training.parity import ParityError, validate_parity


def test_parity_passed_on_every_real_case(embedding_manifest: Manifest) -> None:
    parity = embedding_manifest.model_dump(mode="json")["parity"]
    assert parity["passed"] is True
    assert [case["name"] for case in parity["cases"]] == ["batch-1", "mixed-length", "max-length"]
    assert parity["cases"][2]["shape"] == [2, 128]
    assert all(case["max_abs_diff"] <= parity["tolerance"] for case in parity["cases"])
    assert parity["max_abs_diff"] == max(case["max_abs_diff"] for case in parity["cases"])


def test_perturbed_module_raises_parity_error_and_leaves_no_package(digits_spec: ExportSpec, tmp_path: Path) -> None:
    out_dir = tmp_path / "packages" / "digits"
    with pytest.raises(ParityError) as error:
        build_package(perturbed(digits_spec), out_dir, name="digits", version="v1", metrics={}, source=SOURCE)
    assert [case.name for case in error.value.report.failures] == ["batch-1", "batch-32"]
    assert all(case.max_abs_diff == pytest.approx(0.05, abs=1e-4) for case in error.value.report.failures)
    assert "batch-1 shape=[1, 1, 8, 8]" in str(error.value)
    assert "batch-32 shape=[32, 1, 8, 8]" in str(error.value)
    assert list((tmp_path / "packages").iterdir()) == []


def test_perturbed_graph_fails_every_case(digits_spec: ExportSpec, tmp_path: Path) -> None:
    # given a correctly exported graph whose first weight is then tampered with
    path = export_onnx(digits_spec, tmp_path / "model.onnx")
    model = onnx.load(str(path))
    weight = model.graph.initializer[0]
    values = onnx.numpy_helper.to_array(weight) * 1.5
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(path))
    # when / then
    with pytest.raises(ParityError) as error:
        validate_parity(digits_spec, path)
    assert len(error.value.report.failures) == len(digits_spec.parity_cases)
    assert error.value.report.passed is False
    assert all(case.max_abs_diff > digits_spec.tolerance for case in error.value.report.cases)
