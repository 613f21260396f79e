"""Two ways to run a graph behind one interface: ONNX Runtime in-process, or a SageMaker (Triton) endpoint
(`functions.runtime.endpoint`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import onnxruntime as ort

from functions.runtime.bucketing import CALL_COST_TOKENS
from functions.runtime.errors import BackendError


class InferenceBackend(Protocol):
    """Graph feeds in, graph outputs out; pre/post-processing never lives here."""

    name: str
    remote: bool  # True: readiness is the remote runner's, asked over the network, not settled at init
    max_rows: int | None  # the most rows one call may carry (Triton's max_batch_size); None: no limit
    call_cost_tokens: float  # what one more call costs in padded tokens' worth of compute (see bucketing)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def run_many(self, batches: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Sub-batches of one request, answered in the order given."""
        ...


class OnnxBackend:
    """The in-process session (Lambda): feeds go to session.run as they are, no copies."""

    name = "onnxruntime"
    remote = False
    max_rows: int | None = None
    call_cost_tokens: float = CALL_COST_TOKENS

    def __init__(self, session: ort.InferenceSession, output_names: list[str]) -> None:
        self.session = session
        self.output_names = output_names

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self.session.run(self.output_names, feeds)  # type: ignore[arg-type]
        except Exception as error:  # onnxruntime raises its own untyped errors (Fail, InvalidArgument, ...)
            raise BackendError(f"onnxruntime failed: {error}") from error
        return dict(zip(self.output_names, results, strict=True))

    def run_many(self, batches: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        return [self.run(feeds) for feeds in batches]
