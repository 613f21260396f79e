"""The parity gate: PyTorch and ONNX Runtime must agree on every real input, or there is no package.

Validation collects every mismatch with its worst difference, then raises one typed error (as Optimum's exporters
do, except that ours fails the export).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from functions.runtime.package import ParityRecord
from training.export import ExportError, torch_inputs
from training.export_spec import ExportSpec, Feeds
from training.graph_scoring import open_session


class ParityError(ExportError):
    """ONNX Runtime disagrees with PyTorch on at least one real input; carries the whole report."""

    def __init__(self, report: ParityReport) -> None:
        self.report = report
        failing = "; ".join(
            f"{case.name} shape={case.shape}: max_abs_diff={case.max_abs_diff:.3g}"
            + (f" ({case.problem})" if case.problem else "")
            for case in report.failures
        )
        super().__init__(
            f"parity failed on {len(report.failures)} of {len(report.cases)} cases "
            f"(tolerance {report.tolerance:g}): {failing}"
        )


@dataclass(frozen=True)
class ParityCase:
    """One real input compared between PyTorch and ONNX Runtime."""

    name: str
    shape: list[int]
    max_abs_diff: float
    passed: bool
    argmax_agreement: float | None = None
    problem: str = ""


@dataclass(frozen=True)
class ParityReport:
    """Every case's worst difference, so one failed export names all its problems at once."""

    tolerance: float
    cases: list[ParityCase]

    @property
    def failures(self) -> list[ParityCase]:
        return [case for case in self.cases if not case.passed]

    @property
    def passed(self) -> bool:
        return bool(self.cases) and not self.failures

    @property
    def max_abs_diff(self) -> float:
        return max((case.max_abs_diff for case in self.cases), default=float("nan"))

    @property
    def argmax_agreement(self) -> float | None:
        agreements = [case.argmax_agreement for case in self.cases if case.argmax_agreement is not None]
        return min(agreements) if agreements else None

    def to_record(self) -> ParityRecord:
        """The manifest's parity record; each case keeps only the fields it has."""
        return ParityRecord(
            passed=self.passed,
            tolerance=self.tolerance,
            max_abs_diff=self.max_abs_diff,
            argmax_agreement=self.argmax_agreement,
            cases=[{k: v for k, v in asdict(case).items() if v is not None and v != ""} for case in self.cases],
        )


def _run_torch(spec: ExportSpec, feeds: Feeds) -> list[np.ndarray]:
    with torch.inference_mode():
        outputs = spec.module.eval()(*torch_inputs(spec, feeds))
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    return [output.detach().float().cpu().numpy() for output in outputs]


def _compare_case(
    spec: ExportSpec, name: str, feeds: Feeds, expected: list[np.ndarray], actual: list[np.ndarray]
) -> ParityCase:
    shape = list(feeds[spec.input_names[0]].shape)
    if len(expected) != len(actual):
        return ParityCase(name, shape, float("inf"), False, problem=f"{len(actual)} outputs, expected {len(expected)}")
    worst = 0.0
    for output_name, want, got in zip(spec.output_names, expected, actual, strict=True):
        if want.shape != got.shape:
            problem = f"{output_name} shape {got.shape} != {want.shape}"
            return ParityCase(name, shape, float("inf"), False, problem=problem)
        if not np.all(np.isfinite(got)):
            return ParityCase(name, shape, float("inf"), False, problem=f"{output_name} has non-finite values")
        worst = max(worst, float(np.max(np.abs(want.astype(np.float64) - got.astype(np.float64)), initial=0.0)))
    agreement = None
    if spec.validation_labels is not None:  # a classifier: its argmax is what the API answers
        agreement = float(np.mean(expected[0].argmax(axis=-1) == actual[0].argmax(axis=-1)))
    return ParityCase(name, shape, worst, worst <= spec.tolerance, argmax_agreement=agreement)


def validate_parity(spec: ExportSpec, onnx_path: Path) -> ParityReport:
    """Compare PyTorch and ONNX Runtime on every real parity case; raise one ParityError naming every failure."""
    session = open_session(onnx_path)
    cases = []
    for name, feeds in spec.parity_cases:
        expected = _run_torch(spec, feeds)
        try:
            actual = session.run(spec.output_names, {k: feeds[k] for k in spec.input_names})
        except Exception as error:  # onnxruntime raises its own untyped errors; the case fails, the others still run
            shape = list(feeds[spec.input_names[0]].shape)
            cases.append(ParityCase(name, shape, float("inf"), False, problem=f"onnxruntime: {error}"[:300]))
            continue
        cases.append(_compare_case(spec, name, feeds, expected, actual))
    report = ParityReport(tolerance=spec.tolerance, cases=cases)
    if not report.passed:
        raise ParityError(report)
    return report
