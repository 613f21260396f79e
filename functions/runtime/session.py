"""The ONNX Runtime session: created once per process, tuned for a small, CPU-pinned Lambda sandbox."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def create_session(graph_path: Path, intra_op_threads: int) -> ort.InferenceSession:
    """One session per model per process; inter-op 1 and sequential because the graphs are single-branch."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings about unused initialisers are noise in the logs
    return ort.InferenceSession(str(graph_path), sess_options=options, providers=["CPUExecutionProvider"])
