"""python -m registry versions MODEL | show MODEL VERSION | diff MODEL V1 V2 | promote MODEL VERSION [--force --reason
TEXT] | rollback MODEL   (the local stack's registry by default; --aws for the account's SageMaker Model Registry)"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from catalog import CatalogError, load_catalog
from registry.local_registry import REGISTRY_DIR
from registry.lock import LOCK_PATH, LockError, read_lock
from registry.model_registry import ModelRegistry, RegisteredVersion, RegistryError
from registry.promotion import promote, rollback


def _metrics_text(version: RegisteredVersion, keys: Sequence[str]) -> str:
    return " ".join(f"{key}={version.metrics[key]:.4f}" for key in keys if key in version.metrics) or "-"


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def versions_table(versions: Sequence[RegisteredVersion], served: str | None, primary: str | None) -> str:
    """One row per version: number, version, status, the primary metric (then the rest), created, served."""
    keys = sorted({key for v in versions for key in v.metrics}, key=lambda key: (key != primary, key))
    rows = [("#", "version", "status", "metrics", "created", "served")]
    for v in versions:
        rows.append(
            (
                str(v.number),
                v.version,
                v.status,
                _metrics_text(v, keys),
                v.created_at,
                "*" if v.version == served else "",
            )
        )
    return _table(rows)


def show_text(version: RegisteredVersion, served: str | None) -> str:
    served_mark = "  served" if version.version == served else ""
    parity = f"{version.metadata.get('parity', '?')} (max abs diff {version.metadata.get('parity_max_abs_diff', '-')})"
    lines = [
        f"{version.name} {version.version}  (model package version {version.number}){served_mark}",
        f"  status       {version.status}",
        f"  approval     {version.approval_description or '-'}",
        f"  arn          {version.arn}",
        f"  package      {version.package_uri}",
        f"  sha256       {version.archive_sha256}",
        f"  parity       {parity}",
        f"  created      {version.created_at}",
        f"  approved at  {version.approved_at or '-'}",
    ]
    lines += [f"  {key:<28} {value:.4f}" for key, value in sorted(version.metrics.items())]
    return "\n".join(lines)


def diff_text(first: RegisteredVersion, second: RegisteredVersion, primary: str | None) -> str:
    keys = sorted(first.metrics.keys() | second.metrics.keys(), key=lambda key: (key != primary, key))
    rows = [("metric", first.version, second.version, "change")]
    for key in keys:
        a, b = first.metrics.get(key), second.metrics.get(key)
        change = f"{(b - a) * 100:+.2f} points" if a is not None and b is not None else ""
        rows.append((key, "-" if a is None else f"{a:.4f}", "-" if b is None else f"{b:.4f}", change))
    return _table(rows)


@contextlib.contextmanager
def open_registry(arguments: argparse.Namespace) -> Iterator[ModelRegistry]:
    if arguments.aws:
        from registry.local_registry import aws_registry

        if not arguments.bucket:
            raise SystemExit("--aws needs --bucket (or MODELS_BUCKET): the artifacts bucket holding models/")
        yield aws_registry(arguments.bucket, load_catalog().platform, arguments.region)
        return
    from registry.local_registry import RegistryHome, local_registry

    with local_registry(RegistryHome(state_dir=arguments.state_dir, lock_path=arguments.lock)) as registry:
        yield registry


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m registry", description=__doc__.splitlines()[0])
    parser.add_argument("--aws", action="store_true", help="the AWS account's registry instead of the local stack's")
    parser.add_argument("--bucket", default=os.environ.get("MODELS_BUCKET"), help="--aws: the artifacts bucket")
    parser.add_argument("--region", default=None, help="--aws: the region (default: the boto3 session's)")
    parser.add_argument("--lock", type=Path, default=LOCK_PATH, help="the version lock to read and write")
    parser.add_argument(
        "--state-dir", type=Path, default=REGISTRY_DIR, help="the local registry's saved state (default build/registry)"
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("versions", help="every registered version of a model").add_argument("model")
    show = verbs.add_parser("show", help="one version in full")
    show.add_argument("model")
    show.add_argument("version")
    diff = verbs.add_parser("diff", help="two versions' metrics side by side")
    diff.add_argument("model")
    diff.add_argument("first")
    diff.add_argument("second")
    promote_verb = verbs.add_parser("promote", help="approve a version (gated) and lock it as served")
    promote_verb.add_argument("model")
    promote_verb.add_argument("version")
    promote_verb.add_argument("--force", action="store_true", help="override the quality gate (never integrity)")
    promote_verb.add_argument("--reason", help="why: required with --force, recorded on the version")
    verbs.add_parser("rollback", help="back to the previously approved version").add_argument("model")
    return parser.parse_args(argv)


def run(arguments: argparse.Namespace) -> str:
    catalog = load_catalog()
    entry = catalog.model(arguments.model)
    primary = entry.promotion.primary_metric
    with open_registry(arguments) as registry:
        served = read_lock(arguments.lock).models.get(entry.name)
        served_version = served.version if served else None
        if arguments.verb == "versions":
            versions = registry.versions(entry.name)
            if not versions:
                return f"{entry.name}: no registered versions (train one: make models)"
            return versions_table(versions, served_version, primary)
        if arguments.verb == "show":
            return show_text(registry.version(entry.name, arguments.version), served_version)
        if arguments.verb == "diff":
            first = registry.version(entry.name, arguments.first)
            second = registry.version(entry.name, arguments.second)
            return diff_text(first, second, primary)
        if arguments.verb == "promote":
            if arguments.reason and not arguments.force:
                raise RegistryError("--reason goes with --force")
            done = promote(
                registry,
                entry.name,
                arguments.version,
                entry.promotion,
                arguments.lock,
                force=arguments.force,
                reason=arguments.reason,
            )
        else:
            done = rollback(registry, entry.name, arguments.lock)
        was = done.previous.version if done.previous else "none"
        return f"{entry.name}: serving {done.served.version} (was {was}); {done.description}; lock: {arguments.lock}"


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        print(run(arguments))
    except (RegistryError, CatalogError, LockError) as error:
        print(f"registry: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
