"""What a reader must know to read the table right; said by the run itself so it cannot drift."""

from __future__ import annotations

from pathlib import Path


def standing_notes(*, quick: bool, checkpoint: Path | None) -> list[str]:
    notes = [
        "Item 2: Hugging Face Optimum cannot be installed beside transformers 5 (optimum-onnx 0.1.0 requires "
        "transformers<4.58), so the peer exporter is a plain `torch.onnx.export` of the same PyTorch module "
        f"({'TorchScript exporter (--quick)' if quick else 'torch default exporter'}), run in the same "
        "onnxruntime with the serving runtime's session options.",
        "PyTorch weights: "
        + (
            f"the sentiment job's fine-tuned checkpoint ({checkpoint})."
            if checkpoint
            else "no training checkpoint was found, so the PyTorch baseline is all-MiniLM-L6-v2 with an untrained "
            "linear head: the same architecture and cost, different outputs (item 2's output check then uses our "
            "fp32 export of the same module)."
        ),
        "Items 1, 3 and 8 time the API handler exactly as Lambda calls it (API Gateway payload 2.0 event in, "
        "JSON response out; Powertools' per-request EMF line goes to a sink); contenders run in alternating blocks.",
        "Item 5 times one pass of each side (upload to summary vs a hand-written tokenise + session.run loop); "
        "its RSS is the batch function's own process (the local stack runs each function in one, as Lambda does).",
        "Item 9 stretches the measured single-thread latency by 1769/memory below one vCPU; prices and their "
        "sources are in placement.json.",
    ]
    if quick:
        notes.insert(0, "QUICK run: tiny packages and a few iterations; these figures prove the code path only.")
    return notes
