"""The SageMaker training entry point: `python -m training.train` (SageMaker script mode runs it as a module through
the source tarball's `train.py` launcher, see training/jobs/sagemaker_job.py).

It reads the toolkit contract (training/environment.py), trains the catalog model named by the `model_name`
hyperparameter (CUDA + bf16 autocast when present, DDP when WORLD_SIZE > 1), checkpoints and resumes, and has rank 0
write the evaluation report, the curves and the model package. CLI arguments that SageMaker appends (`--key value`)
repeat hyperparameters.json and are ignored.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DistributedSampler

from catalog import ModelEntry, Target, load_catalog
from functions.runtime.package import read_manifest
from training.environment import Hyperparameters, TrainingEnvironment, read_environment
from training.job_logging import StepProgress, configure_logging, log_metrics, logger, package_summary
from training.report import CURVES_FILE, REPORT_FILE, TrainingCurves, plot_curves, write_report
from training.tasks.base import Evaluation, TrainingTask, load_task

CHECKPOINT_FILE = "checkpoint.pt"
MAX_GRAD_NORM = 1.0


@dataclass
class Progress:
    """Everything a resumed job needs beyond the model and optimiser: where it was and what it had logged."""

    step: int = 0
    curves: TrainingCurves | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(env: TrainingEnvironment) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def autocast(device: torch.device) -> Any:
    """bf16 autocast on a GPU; full fp32 on the CPU (bf16 there is slow on this hardware and gains nothing)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def linear_schedule(warmup_steps: int, total_steps: int) -> Any:
    """Linear warm-up then linear decay to zero: the usual fine-tuning schedule."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(warmup_steps, 1)
        return max(0.0, (total_steps - step) / max(total_steps - warmup_steps, 1))

    return factor


def save_checkpoint(
    path: Path, *, model_name: str, model: nn.Module, optimizer: Any, scheduler: Any, step: int, curves: TrainingCurves
) -> None:
    """Write atomically (temp file, then rename): a job killed mid-write keeps its previous checkpoint."""
    state = {
        "model_name": model_name,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "curves": curves.to_dict(),
        "rng": {
            "python": random.getstate(),
            "numpy": _numpy_rng_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _numpy_rng_state() -> dict[str, Any]:
    """NumPy's RNG state as tensors and numbers, which the weights-only unpickler accepts (an ndarray it does not)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "name": name,
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def _set_numpy_rng_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["position"], state["has_gauss"], state["cached_gaussian"]))


def load_checkpoint(path: Path, *, model_name: str, model: nn.Module, optimizer: Any, scheduler: Any) -> Progress:
    """Restore model, optimiser, schedule, step, curves and RNG state; a fresh Progress when there is none."""
    if not path.is_file():
        return Progress()
    # weights_only: checkpoints come back from S3 (SageMaker's checkpoint sync), so they are data, never code
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["model_name"] != model_name:
        raise RuntimeError(f"{path} belongs to model {state['model_name']!r}, not {model_name!r}: use another dir")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    random.setstate(state["rng"]["python"])
    _set_numpy_rng_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return Progress(step=int(state["step"]), curves=TrainingCurves.from_dict(state["curves"]))


def _mean_across_ranks(value: float, device: torch.device) -> float:
    if not distributed.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    distributed.all_reduce(tensor)
    return float(tensor.item()) / distributed.get_world_size()


def fit(
    task: TrainingTask, model: nn.Module, hp: Hyperparameters, env: TrainingEnvironment, device: torch.device
) -> TrainingCurves:
    """The training loop shared by every task; returns the curves for the report."""
    examples = task.train_examples()
    sampler: DistributedSampler[int] = DistributedSampler(
        examples,  # type: ignore[arg-type]  # any sized sequence will do: we only draw indices
        num_replicas=env.world_size,
        rank=env.rank,
        shuffle=True,
        seed=hp.seed,
    )
    steps_per_epoch = math.ceil(len(sampler) / hp.batch_size)
    total_steps = hp.epochs * steps_per_epoch
    if hp.max_steps > 0:
        total_steps = min(total_steps, hp.max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
    scheduler = LambdaLR(optimizer, linear_schedule(round(hp.warmup_ratio * total_steps), total_steps))
    checkpoint = env.checkpoint_dir / CHECKPOINT_FILE
    resumed = load_checkpoint(
        checkpoint, model_name=task.entry.name, model=model, optimizer=optimizer, scheduler=scheduler
    )
    curves = resumed.curves or TrainingCurves()
    step = resumed.step
    if step:
        logger.info("resumed from checkpoint %s at step=%d", checkpoint, step)
        if env.rank:
            torch.manual_seed(hp.seed + env.rank + step)  # only rank 0's random stream is in the checkpoint
    logger.info(
        "training %s: examples=%d world_size=%d steps_per_epoch=%d total_steps=%d device=%s",
        task.entry.name, len(examples), env.world_size, steps_per_epoch, total_steps, device,
    )  # fmt: skip
    trained = model
    if env.world_size > 1:
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    trained.train()
    progress = StepProgress(env, total_steps, initial=step)
    window: list[float] = []
    with progress.shown():
        while step < total_steps:
            epoch = step // steps_per_epoch
            sampler.set_epoch(epoch)
            order = list(sampler)
            batches = [order[start : start + hp.batch_size] for start in range(0, len(order), hp.batch_size)]
            for indices in batches[step % steps_per_epoch :]:
                batch = {key: value.to(device) for key, value in task.collate([examples[i] for i in indices]).items()}
                with autocast(device):
                    loss = task.loss(trained, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                step += 1
                progress.advance()
                window.append(loss.item())
                if step % hp.log_every == 0 or step == total_steps:
                    train_loss = _mean_across_ranks(sum(window) / len(window), device)
                    window.clear()
                    curves.train_loss.append((step, train_loss))
                    learning_rate = float(scheduler.get_last_lr()[0])
                    progress.report(step=step, epoch=epoch, train_loss=train_loss, learning_rate=learning_rate)
                if env.is_main_process and (step % steps_per_epoch == 0 or step == total_steps):
                    curves.validation.append(_validate(task, model, device, step, epoch, progress))
                if env.is_main_process and (step % hp.checkpoint_every == 0 or step == total_steps):
                    save_checkpoint(
                        checkpoint, model_name=task.entry.name, model=model, optimizer=optimizer,
                        scheduler=scheduler, step=step, curves=curves,
                    )  # fmt: skip
                    logger.debug("checkpoint saved at step=%d", step)
                if step == total_steps:
                    break
    return curves


def _validate(
    task: TrainingTask, model: nn.Module, device: torch.device, step: int, epoch: int, progress: StepProgress
) -> dict[str, float]:
    evaluation = task.evaluate(model, "validation", device)
    if evaluation is None:
        raise TypeError(f"{type(task).__name__} trains, so it must evaluate")
    progress.report(step=step, epoch=epoch, val_loss=evaluation.loss, val_accuracy=evaluation.accuracy)
    return {"step": step, "epoch": epoch, "val_loss": evaluation.loss, "val_accuracy": evaluation.accuracy}


def package_version() -> str:
    """A UTC timestamp, so versions sort in the order they were built."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def finish(
    task: TrainingTask, model: nn.Module, curves: TrainingCurves, env: TrainingEnvironment, device: torch.device
) -> Path:
    """Rank 0 only: evaluate, write report and curves, then build the package into SM_MODEL_DIR."""
    from training.packaging import build_package  # onnx/onnxruntime are only needed once training is over

    entry = task.entry
    metrics: dict[str, Any] = {}
    evaluations: dict[str, Evaluation] = {}
    for split, prefix in (("validation", "val"), ("test", "test")):
        evaluation = task.evaluate(model, split, device)
        if evaluation is not None:
            evaluations[split] = evaluation
            metrics[f"{prefix}_accuracy"] = round(evaluation.accuracy, 4)
            log_metrics(**{f"{prefix}_loss": evaluation.loss, f"{prefix}_accuracy": evaluation.accuracy})
    baseline = task.baseline()
    if baseline is not None:
        metrics["baseline"] = baseline
        log_metrics(baseline_test_accuracy=baseline["test_accuracy"])
    if evaluations:
        write_report(
            env.output_data_dir / REPORT_FILE, model_name=entry.name, labels=task.labels, evaluations=evaluations,
            baseline=baseline, hyperparameters=dict(env.hyperparameters),
        )  # fmt: skip
    if curves.train_loss:
        plot_curves(curves, env.output_data_dir / CURVES_FILE, title=f"{entry.name} ({env.job_name})")
    on_sagemaker = entry.target is Target.SAGEMAKER
    package = build_package(
        task.export_spec(model.cpu()),
        env.model_dir,
        name=entry.name,
        version=package_version(),
        metrics=metrics,
        source={
            "base_model": entry.source,
            "dataset": entry.dataset,
            "hyperparameters": dict(env.hyperparameters),
            "job_name": env.job_name,
            "profile": env.profile,
        },
        triton_max_batch_size=entry.sagemaker.max_batch_size if on_sagemaker else None,
        tensorrt=on_sagemaker and entry.sagemaker.tensorrt,
    )
    logger.info("package written to %s: %s", package, package_summary(read_manifest(package)))
    return package


@contextmanager
def process_group(env: TrainingEnvironment, device: torch.device) -> Iterator[None]:
    """torchrun / SageMaker torch_distributed: one process per device, NCCL on GPUs, gloo on CPUs."""
    if env.world_size <= 1:
        yield
        return
    distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        distributed.destroy_process_group()


def run(env: TrainingEnvironment, entry: ModelEntry) -> Path | None:
    """Train and package one catalog model; returns the package (rank 0) or None (other ranks)."""
    hp = env.training
    device = pick_device(env)
    package = None
    with process_group(env, device), tempfile.TemporaryDirectory(prefix="training-") as work_dir:
        seed_everything(hp.seed)  # identical initial weights on every rank
        task = load_task(entry, hp, env.channels, Path(work_dir))
        model = task.build_model().to(device)
        torch.manual_seed(hp.seed + env.rank)  # but each rank its own dropout
        curves = fit(task, model, hp, env, device) if task.trainable else TrainingCurves()
        if env.is_main_process:
            package = finish(task, model, curves, env, device)
        if env.world_size > 1:
            distributed.barrier()
    return package


def main() -> None:
    env = read_environment()
    configure_logging(env.log_level, main_process=env.is_main_process)
    run(env, load_catalog().model(env.model_name))


if __name__ == "__main__":
    main()
