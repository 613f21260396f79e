"""Train catalog models in local mode or on SageMaker, reusing packages that are already what would be trained.

python -m training.submit --all|--model NAME [--profile demo|full] [--mode local|sagemaker] [--force] [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog import ROOT, ModelEntry, load_catalog
from functions.runtime.package import MANIFEST_FILE, PackageError, load_package, read_manifest
from registry.local_registry import RegistryHome, aws_registry, local_registry
from registry.model_registry import ModelRegistry
from registry.promotion import register_version
from registry.store import PackageStore
from training.jobs.local_mode import train_local
from training.jobs.request import JobRequest, Profile, TrainingJobError
from training.jobs.sagemaker_job import SageMakerTarget, train_on_sagemaker

WORK_ROOT = ROOT / "build" / "training"
HOME = RegistryHome()  # package versions, the local registry's saved state, and the version lock
# Who the job is, not how it trains: these differ between runs of the same training and never block reuse.
IDENTITY_KEYS = frozenset({"model_name", "profile", "job_name"})


@dataclass(frozen=True)
class Reuse:
    """Whether a finished package can stand in for a new training run, and why not when it cannot."""

    package_dir: Path
    reusable: bool
    reason: str


def _training_settings(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    # JSON round trip: the manifest stores what the job decoded from hyperparameters.json.
    settings = json.loads(json.dumps(dict(hyperparameters)))
    return {
        key: value for key, value in settings.items() if key not in IDENTITY_KEYS and not key.startswith("sagemaker_")
    }


def check_reuse(
    entry: ModelEntry, *, profile: Profile, overrides: Mapping[str, Any] | None = None, package_dir: Path | None = None
) -> Reuse:
    """A package is reused only if it verifies and was trained with exactly this profile and these hyperparameters."""
    directory = (
        Path(package_dir) if package_dir else (PackageStore(HOME.packages_dir).latest(entry.name) or entry.package_dir)
    )
    if not (directory / MANIFEST_FILE).is_file():
        return Reuse(directory, False, "no package yet")
    try:
        package = load_package(directory)  # serving's own check: parity passed, every file's size and sha256
    except PackageError as error:
        return Reuse(directory, False, str(error))
    source = package.manifest.source
    if source.get("profile") != profile:
        return Reuse(directory, False, f"trained with profile {source.get('profile')!r}, not {profile!r}")
    wanted = _training_settings({**entry.hyperparameters_for(profile), **(overrides or {})})
    trained = _training_settings(source.get("hyperparameters", {}))
    if trained != wanted:
        changed = sorted(key for key in wanted.keys() | trained.keys() if wanted.get(key) != trained.get(key))
        return Reuse(directory, False, f"hyperparameters changed: {', '.join(changed)}")
    return Reuse(directory, True, "parity passed, checksums match, same profile and hyperparameters")


def work_dir_for(entry: ModelEntry, profile: Profile, overrides: Mapping[str, Any] | None = None) -> Path:
    """One job folder per model and training settings: a killed job resumes its own checkpoint, never another's."""
    settings = _training_settings({**entry.hyperparameters_for(profile), **(overrides or {})})
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return WORK_ROOT / f"{entry.name}-{profile}-{digest}"


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else "n/a"


def describe_package(package_dir: Path) -> str:
    """One line a person reads after a run: which package, quality vs baseline, parity, shipped precision, where."""
    manifest = read_manifest(package_dir)
    metrics = manifest.metrics
    baseline = metrics.get("baseline") or {}
    quality = [f"{key}={_number(value)}" for key, value in metrics.items() if key != "baseline"]
    if baseline:
        quality.append(f"baseline {baseline.get('name', '?')} test_accuracy={_number(baseline.get('test_accuracy'))}")
    parity = manifest.parity
    return (
        f"{manifest.name} {manifest.version} | {' '.join(quality) or 'no metrics'}"
        f" | parity {'passed' if parity.passed else 'FAILED'}"
        f" (max_abs_diff={'n/a' if parity.max_abs_diff is None else f'{parity.max_abs_diff:.3g}'},"
        f" tol={parity.tolerance}) | precision {manifest.graph.precision} | {package_dir}"
    )


def _sagemaker_clients(region: str | None) -> tuple[Any, Any]:
    import boto3

    session = boto3.Session(region_name=region)
    return session.client("sagemaker"), session.client("s3")


@contextlib.contextmanager
def model_registry(arguments: argparse.Namespace) -> Iterator[ModelRegistry]:
    """Where trained packages are registered: the account's Model Registry for SageMaker jobs, else the local one."""
    if arguments.mode == "sagemaker":
        yield aws_registry(arguments.bucket, load_catalog().platform, arguments.region)
        return
    with local_registry(HOME) as registry:
        yield registry


def register(entry: ModelEntry, package: Path, arguments: argparse.Namespace) -> None:
    """Register the package (idempotent) and say what a person does next."""
    with model_registry(arguments) as registry:
        registered = register_version(registry, package, HOME.lock_path)
    if registered.status == "PendingManualApproval":
        hint = f"; to serve it: python -m registry promote {entry.name} {registered.version}"
    else:
        hint = ""
    print(
        f"[{entry.name}] registered {registered.version} as model package version {registered.number}:"
        f" {registered.status}{hint}",
        flush=True,
    )


def train_one(entry: ModelEntry, arguments: argparse.Namespace) -> Path:
    """Reuse the latest version when it is current, else train a new one in the chosen mode, file it under
    build/models/<name>/<version>/ and register it; prints one summary line."""
    profile: Profile = arguments.profile
    job = JobRequest.create(
        entry,
        profile=profile,
        work_dir=work_dir_for(entry, profile),
        processes=arguments.processes,
        verbose=arguments.verbose,
    )
    started = time.perf_counter()
    if arguments.force:
        shutil.rmtree(job.work_dir, ignore_errors=True)  # --force also drops checkpoints a resumed job would pick up
        reason = "--force"
    else:
        reuse = check_reuse(entry, profile=profile)
        if reuse.reusable:
            print(f"[{entry.name}] reusing {reuse.package_dir}: {reuse.reason}", flush=True)
            print(f"[{entry.name}] {describe_package(reuse.package_dir)}", flush=True)
            register(entry, reuse.package_dir, arguments)
            return reuse.package_dir
        reason = reuse.reason
    print(f"[{entry.name}] training ({arguments.mode}, profile {profile}): {reason}", flush=True)
    if arguments.mode == "local":
        package = train_local(job)
    else:
        sagemaker, s3 = _sagemaker_clients(arguments.region)
        target = SageMakerTarget(role_arn=arguments.role_arn, bucket=arguments.bucket, platform=load_catalog().platform)
        package = train_on_sagemaker(job, target, sagemaker=sagemaker, s3=s3)
    package = PackageStore(HOME.packages_dir).add(package)
    wall = time.perf_counter() - started
    print(f"[{entry.name}] trained in {wall:.1f} s | {describe_package(package)}", flush=True)
    register(entry, package, arguments)
    return package


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.submit", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every model in the catalog")
    which.add_argument("--model", action="append", metavar="NAME", help="one catalog model (repeatable)")
    parser.add_argument("--profile", choices=["demo", "full"], default="demo", help="demo: the CPU budget (default)")
    parser.add_argument("--mode", choices=["local", "sagemaker"], default="local")
    parser.add_argument("--force", action="store_true", help="retrain even when a matching package exists")
    parser.add_argument("--processes", type=int, default=1, help="local mode: torchrun processes (DDP on gloo)")
    parser.add_argument("--role-arn", default=os.environ.get("SAGEMAKER_ROLE_ARN"), help="SageMaker execution role")
    parser.add_argument("--bucket", default=os.environ.get("MODELS_BUCKET"), help="artifacts bucket (SageMaker mode)")
    parser.add_argument("--region", default=None, help="AWS region (default: the boto3 session's)")
    parser.add_argument(
        "--verbose", action="store_true", help="the job logs the libraries' chatter too (as LOG_LEVEL=DEBUG does)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.mode == "sagemaker" and not (arguments.role_arn and arguments.bucket):
        raise SystemExit("--mode sagemaker needs --role-arn and --bucket (or SAGEMAKER_ROLE_ARN and MODELS_BUCKET)")
    PackageStore(HOME.packages_dir).adopt_unversioned()  # packages of the one-folder-per-model layout become versions
    catalog = load_catalog()
    entries = list(catalog.models.values()) if arguments.all else [catalog.model(name) for name in arguments.model]
    failures: list[str] = []
    started = time.perf_counter()
    for entry in entries:
        try:
            train_one(entry, arguments)
        except TrainingJobError as error:
            print(f"[{entry.name}] FAILED: {error}", file=sys.stderr, flush=True)
            failures.append(entry.name)
    print(f"{len(entries) - len(failures)}/{len(entries)} packages ready in {time.perf_counter() - started:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
