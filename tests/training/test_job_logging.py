"""A quiet job: the libraries' chatter is dropped inside the export steps unless the job runs verbose."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from training.export import export_onnx
from training.export_spec import ExportSpec
from training.job_logging import metric_line, quiet_libraries
from training.quantization import quantize_graph


@pytest.fixture(scope="module")
def digits_graph(digits_spec: ExportSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(digits_spec, tmp_path_factory.mktemp("graph") / "exported.onnx")


def _library_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if not record.name.startswith("training")]


def test_the_quantizer_is_quiet_by_default(
    digits_graph: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        quantize_graph(digits_graph, tmp_path / "int8.onnx", preprocess=True)

    assert _library_records(caplog) == []
    assert (tmp_path / "int8.onnx").is_file()


def test_a_verbose_job_hears_the_quantizer_again(
    digits_graph: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):  # what LOG_LEVEL=DEBUG sets the libraries to
        quantize_graph(digits_graph, tmp_path / "int8.onnx", preprocess=True)

    assert any("Quantization parameters for tensor" in message for message in _library_records(caplog))


def test_warnings_are_dropped_only_inside_the_block(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_libraries():
            warnings.warn("inside", UserWarning, stacklevel=1)
            logging.getLogger("onnxruntime").warning("inside")
        warnings.warn("outside", UserWarning, stacklevel=1)
        logging.getLogger("onnxruntime").warning("outside")

    assert [str(warning.message) for warning in caught] == ["outside"]
    assert _library_records(caplog) == ["outside"]
    assert logging.getLogger().level == logging.WARNING  # restored


def test_metric_lines_keep_sagemakers_form() -> None:
    assert metric_line(step=40, epoch=0, train_loss=0.123456789) == "step=40 epoch=0 train_loss=0.123457"
