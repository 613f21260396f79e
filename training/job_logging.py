"""How a job talks: progress (a bar on a terminal, the metric lines SageMaker scrapes elsewhere), one summary line
per package, and the libraries' chatter only when asked for.

By default the job logs at INFO and the libraries it drives (onnxruntime's optimizer and quantizer, the torch
exporter, transformers' loading bars) only at WARNING; `LOG_LEVEL=DEBUG` (`python -m training.submit --verbose`)
brings all of it back.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from functions.runtime.package import Manifest
from training.environment import TrainingEnvironment

LOGGER_NAME = "training"
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
# For CreateTrainingJob's AlgorithmSpecification.MetricDefinitions: each matches a `name=value` log token.
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": name, "Regex": rf"\b{name}={_NUMBER}"}
    for name in (
        "train_loss",
        "learning_rate",
        "val_loss",
        "val_accuracy",
        "test_loss",
        "test_accuracy",
        "baseline_test_accuracy",
    )
]

KEY_METRICS = ("test_accuracy", "val_accuracy")  # the first a package has is its one-line figure

logger = logging.getLogger(LOGGER_NAME)


def configure_logging(level: str, *, main_process: bool) -> None:
    """Our loggers at `level` (rank 0; other ranks warn only); the libraries at INFO only when `level` is DEBUG."""
    own = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    verbose = own <= logging.DEBUG
    logging.basicConfig(
        level=logging.INFO if verbose and main_process else logging.WARNING, format=LOG_FORMAT, stream=sys.stdout
    )
    logger.setLevel(own if main_process else max(own, logging.WARNING))


def libraries_verbose() -> bool:
    """True when the root logger lets library INFO through: then nothing is silenced."""
    return logging.getLogger().isEnabledFor(logging.INFO)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Inside the block, library warnings, WARNING records and transformers' progress bars are dropped.

    onnxruntime's quantizer logs hundreds of lines (`Quantization parameters for tensor ... not specified`) and
    advises pre-processing we skip on purpose; the torch exporter warns about ops it exports correctly.
    """
    if libraries_verbose():
        yield
        return
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), _transformers_progress_bars_off():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(previous)


@contextlib.contextmanager
def _transformers_progress_bars_off() -> Iterator[None]:
    transformers_logging = sys.modules.get("transformers.utils.logging")
    if transformers_logging is None or not transformers_logging.is_progress_bar_enabled():
        yield
        return
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.enable_progress_bar()


def metric_line(**metrics: float | int) -> str:
    """`name=value` tokens, the form METRIC_DEFINITIONS scrapes."""
    return " ".join(
        f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}" for key, value in metrics.items()
    )


def log_metrics(**metrics: float | int) -> None:
    logger.info(metric_line(**metrics))


class StepProgress:
    """A tqdm bar when the job's output is a terminal (its metric lines then at DEBUG); elsewhere the metric lines.

    The lines are what SageMaker scrapes (METRIC_DEFINITIONS), so a job off a terminal always writes them.
    """

    def __init__(self, env: TrainingEnvironment, total_steps: int, initial: int) -> None:
        self.enabled = env.is_main_process
        self.level = logging.DEBUG if env.progress_bar else logging.INFO
        self.bar = tqdm(total=total_steps, initial=initial, disable=not (self.enabled and env.progress_bar))
        self.summary: dict[str, str] = {}

    def advance(self) -> None:
        self.bar.update()

    def report(self, **metrics: float | int) -> None:
        if not self.enabled:
            return
        logger.log(self.level, metric_line(**metrics))
        shown = {key: f"{value:.4g}" for key, value in metrics.items() if key in ("train_loss", "val_accuracy")}
        if shown:
            self.summary.update(shown)
            self.bar.set_postfix(self.summary, refresh=False)

    @contextlib.contextmanager
    def shown(self) -> Iterator[None]:
        """Log records go above the bar instead of through it."""
        try:
            with logging_redirect_tqdm() if not self.bar.disable else contextlib.nullcontext():
                yield
        finally:
            self.bar.close()


def package_summary(manifest: Manifest) -> str:
    """Name, version, precision, the key figure and parity's worst case, in words: SageMaker scrapes only metric
    lines, so no `name=value` token here may count a metric twice."""
    figures = [f"{key.replace('_', ' ')} {manifest.metrics[key]:.4f}" for key in KEY_METRICS if key in manifest.metrics]
    worst = manifest.parity.max_abs_diff
    return ", ".join(
        [
            f"{manifest.name} {manifest.version} {manifest.graph.precision}",
            *figures[:1],
            f"parity max abs diff {'n/a' if worst is None else f'{worst:.3g}'}",
        ]
    )
