"""python -m monitoring drift MODEL [--since 24h] [--aws]: capture records against the package's reference.

Writes build/monitoring/<model>/drift.json and drift.png. The records come from the local stack's bucket (a running
`make serve`; sign with the administrator keys it prints) or, with --aws, from the artifacts bucket in AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from catalog import ROOT, CatalogError, load_catalog
from functions.monitoring.drift import DriftCheckError, DriftResult, check_drift
from functions.monitoring.records import read_capture
from functions.runtime.package import PackageError, read_manifest
from local.config import HOST, LOCAL_AWS_PORT, LOCAL_BUCKET, REGION, LocalConfig
from monitoring.chart import plot_drift
from registry.store import approved_package_dir

OUT_DIR = ROOT / "build" / "monitoring"
DURATION = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    match = DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 30m, 24h or 7d")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


def run_drift(
    model: str, s3: Any, bucket: str, package: Path, since: timedelta, out_dir: Path = OUT_DIR
) -> DriftResult:
    """The check for one model, its two files written; DriftCheckError or PackageError when it cannot run."""
    catalog = load_catalog()
    entry = catalog.model(model)
    manifest = read_manifest(package)
    until = datetime.now(UTC)
    records = read_capture(s3, bucket, catalog.platform.capture_prefix, model, until - since, until)
    result = check_drift(
        model,
        manifest.version,
        manifest.monitoring_reference,
        records,
        entry.monitoring.drift_threshold,
        until - since,
        until,
    )
    folder = out_dir / model
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "drift.json").write_text(json.dumps(result.to_document(), indent=2) + "\n", encoding="utf-8")
    assert manifest.monitoring_reference is not None  # check_drift refuses a package without one
    plot_drift(result, manifest.monitoring_reference.features, folder / "drift.png")
    return result


def summary(result: DriftResult, out_dir: Path) -> str:
    lines = [f"{result.model} {result.version}: {result.records} records", f"  {'feature':<20} {'PSI':>8}  threshold"]
    for name, feature in result.features.items():
        flag = "  DRIFT" if feature.drift else ""
        lines.append(f"  {name:<20} {feature.psi:>8.3f}  {feature.threshold:g}{flag}")
    lines.append(f"drift: {'YES' if result.drift else 'no'}; wrote {out_dir / result.model}/drift.json and drift.png")
    return "\n".join(lines)


def s3_client(arguments: argparse.Namespace) -> tuple[Any, str]:
    """(client, bucket): AWS with --aws (the default credential chain), else the local stack's moto."""
    if arguments.aws:
        bucket = arguments.bucket or os.environ.get("MODELS_BUCKET")
        if not bucket:
            raise SystemExit("--aws needs --bucket (the artifacts bucket) or MODELS_BUCKET")
        return boto3.client("s3"), bucket
    config = LocalConfig.from_env()
    endpoint = arguments.endpoint_url or f"http://{HOST}:{config.aws_port}"
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION), arguments.bucket or config.bucket


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m monitoring", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    drift = commands.add_parser("drift", help="PSI of captured traffic against the training reference")
    drift.add_argument("model")
    drift.add_argument("--since", type=parse_duration, default=timedelta(hours=24), help="window (default 24h)")
    drift.add_argument("--aws", action="store_true", help="read the capture records in AWS, not the local stack")
    drift.add_argument("--bucket", help=f"bucket of the records (local: {LOCAL_BUCKET} or the stack's default)")
    drift.add_argument("--endpoint-url", help=f"the local stack's S3 (default http://{HOST}:${LOCAL_AWS_PORT})")
    drift.add_argument("--package", type=Path, help="the package whose reference to use (default: the approved one)")
    drift.add_argument("--out", type=Path, default=OUT_DIR, help="report folder (build/monitoring)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    s3, bucket = s3_client(arguments)
    try:
        package = arguments.package or approved_package_dir(load_catalog().model(arguments.model).name)
        result = run_drift(arguments.model, s3, bucket, package, arguments.since, arguments.out)
    except (DriftCheckError, PackageError, CatalogError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ClientError, BotoCoreError) as error:
        where = "AWS" if arguments.aws else "the local stack (is `make serve` running? export the keys it prints)"
        print(f"error: {where} refused to list the capture records: {error}", file=sys.stderr)
        return 2
    print(summary(result, arguments.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
