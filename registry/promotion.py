"""Promotion and rollback: approvals in the registry that pass the gates, mirrored into the version lock.

A promotion never ships a package whose parity failed or whose sha256 does not match, `--force` or not; `--force`
(with a recorded reason) only overrides the quality gate: no worse than the approved version on the primary metric.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from catalog import PromotionPolicy
from registry.lock import LockedVersion, read_lock, write_lock
from registry.model_registry import ModelRegistry, RegisteredVersion, RegistryError, utc_now


class PromotionRefusedError(RegistryError):
    """The version may not be approved; the message names every reason."""


@dataclass(frozen=True)
class Promotion:
    """What changed: the version now served, the one served before, and how the approval was given."""

    name: str
    served: RegisteredVersion
    previous: RegisteredVersion | None
    description: str


def quality_problem(
    candidate: RegisteredVersion, approved: RegisteredVersion | None, policy: PromotionPolicy
) -> str | None:
    """Why the candidate scores too low against the approved version on the catalog's primary metric, or None."""
    metric = policy.primary_metric
    if metric is None or approved is None or approved.version == candidate.version:
        return None
    theirs = approved.metrics.get(metric)
    if theirs is None:
        return None  # nothing to compare with (the approved version predates the metric)
    ours = candidate.metrics.get(metric)
    if ours is None:
        return f"it has no {metric} to compare with the approved version {approved.version} ({theirs:.4f})"
    drop_points = (theirs - ours) * 100
    if drop_points > policy.tolerance_points:
        return (
            f"its {metric} {ours:.4f} is {drop_points:.2f} points below the approved version {approved.version} "
            f"({theirs:.4f}); the catalog's tolerance is {policy.tolerance_points:g} points"
        )
    return None


def integrity_problems(registry: ModelRegistry, candidate: RegisteredVersion) -> list[str]:
    """Parity as registered, then the archive itself: its sha256, every file's sha256 and parity, as serving checks."""
    problems = []
    if not candidate.parity_passed:
        problems.append("its parity check failed (PyTorch and ONNX Runtime disagree)")
    with tempfile.TemporaryDirectory(prefix="promote-") as scratch:
        try:
            registry.fetch(candidate, Path(scratch))
        except RegistryError as error:
            problems.append(f"its package fails verification: {error}")
    return problems


def _lock_to(lock_path: Path, served: RegisteredVersion) -> None:
    locked = LockedVersion(
        version=served.version,
        manifest_sha256=served.manifest_sha256,
        archive_sha256=served.archive_sha256 or None,
        model_package_arn=served.arn,
        approved_at=served.approved_at or None,
    )
    write_lock(read_lock(lock_path).with_version(served.name, locked), lock_path)


def lock_approved(registry: ModelRegistry, name: str, lock_path: Path) -> RegisteredVersion | None:
    """Write the registry's approved version of `name` into the lock (first registration, or a lock to repair)."""
    approved = registry.approved(name)
    if approved is not None:
        _lock_to(lock_path, approved)
    return approved


def register_version(registry: ModelRegistry, package_dir: Path, lock_path: Path) -> RegisteredVersion:
    """Register a trained package; a model's first version is approved at registration and locked as served.

    A lock naming a version this registry does not hold (a registry started afresh, e.g. after `make clean`) is
    repaired to the registry's approved version too."""
    registered = registry.register(package_dir)
    locked = read_lock(lock_path).models.get(registered.name)
    if locked is None or locked.version not in {v.version for v in registry.versions(registered.name)}:
        lock_approved(registry, registered.name, lock_path)
    return registered


def forced_reason_metadata(reason: str) -> str:
    """The reason as a metadata value (SageMaker allows letters, digits, spaces and `_.:/=+-@`, 256 characters)."""
    return (re.sub(r"[^\w\s.:/=+\-@]", " ", reason).strip() or "forced")[:256]


def promote(
    registry: ModelRegistry,
    name: str,
    version: str,
    policy: PromotionPolicy,
    lock_path: Path,
    *,
    force: bool = False,
    reason: str | None = None,
) -> Promotion:
    """Approve `version` of `name` if it passes the gates (or `force` with a reason), and lock it as served."""
    if force and not (reason and reason.strip()):
        raise PromotionRefusedError("--force needs --reason: say why this version ships despite the quality gate")
    candidate = registry.version(name, version)
    approved = registry.approved(name)
    problems = integrity_problems(registry, candidate)
    if problems:
        raise PromotionRefusedError(f"{name} {version} cannot be promoted: " + "; ".join(problems))
    quality = quality_problem(candidate, approved, policy)
    if quality and not force:
        raise PromotionRefusedError(f"{name} {version} is not promoted: {quality} (--force --reason TEXT overrides)")
    if quality:
        description = f"forced past the quality gate ({quality}); reason: {reason}"
        extra = {"forced": "true", "forced_reason": forced_reason_metadata(reason or "")}
    else:
        description = f"promoted: integrity and quality gates passed (was {approved.version if approved else 'none'})"
        extra = {}
    served = registry.set_status(candidate, "Approved", description, approved_at=utc_now(), **extra)
    _lock_to(lock_path, served)
    return Promotion(name, served, approved, description)


def rollback(registry: ModelRegistry, name: str, lock_path: Path) -> Promotion:
    """Reject the served version and re-approve the version approved before it; the lock follows."""
    current = registry.approved(name)
    if current is None:
        raise PromotionRefusedError(f"{name} has no approved version to roll back from")
    earlier = [v for v in registry.versions(name) if v.status == "Approved" and v.version != current.version]
    if not earlier:
        raise PromotionRefusedError(
            f"{name} {current.version} is the only approved version; there is nothing to roll back to"
        )
    previous = max(earlier, key=lambda v: (v.approved_at, v.number))
    problems = integrity_problems(registry, previous)
    if problems:
        raise PromotionRefusedError(f"cannot roll back to {name} {previous.version}: " + "; ".join(problems))
    registry.set_status(current, "Rejected", f"rolled back to {previous.version}")
    served = registry.set_status(
        previous, "Approved", f"re-approved by a rollback from {current.version}", approved_at=utc_now()
    )
    _lock_to(lock_path, served)
    return Promotion(name, served, current, f"rolled back from {current.version}")
