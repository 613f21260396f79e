"""CDK entry point: the only place that reads context and environment; everything below gets a frozen AppConfig."""

from __future__ import annotations

import os
import sys

from aws_cdk import App

from catalog import PACKAGES_DIR, ROOT, load_catalog
from registry.lock import LOCK_PATH, LockError, read_lock
from stacks.assembly import assemble
from stacks.config import AppConfig, JwtSettings, read_bench_placement
from stacks.deploy_gate import DeployGateError


def _flag(app: App, key: str, default: bool) -> bool:
    value = app.node.try_get_context(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _list(app: App, key: str) -> tuple[str, ...]:
    value = app.node.try_get_context(key) or ""
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(item.strip() for item in items if item and item.strip())


def config_from(app: App) -> AppConfig:
    """Context (`cdk.json` or `-c key=value`) and CDK_DEFAULT_* into one frozen object."""
    issuer = str(app.node.try_get_context("jwtIssuer") or "").strip()
    audience = _list(app, "jwtAudience")
    if bool(issuer) != bool(audience):
        raise SystemExit("context: jwtIssuer and jwtAudience go together (set both for a JWT API, neither for IAM)")
    packages = app.node.try_get_context("packagesDir")
    placement = str(app.node.try_get_context("benchPlacement") or "").strip()
    lock = str(app.node.try_get_context("versionLock") or "").strip()
    catalog = load_catalog()
    return AppConfig(
        catalog=catalog,
        stage=str(app.node.try_get_context("stage") or "dev"),
        account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
        region=os.environ.get("CDK_DEFAULT_REGION"),
        source_root=ROOT,
        packages_dir=(ROOT / packages).resolve() if packages else PACKAGES_DIR,
        jwt=JwtSettings(issuer=issuer, audience=audience) if issuer else None,
        cors_origins=_list(app, "corsOrigins"),
        alarm_email=str(app.node.try_get_context("alarmEmail") or "").strip() or None,
        reserve_concurrency=_flag(app, "reserveConcurrency", True),
        gpu_endpoints=_flag(app, "gpuEndpoints", True),
        termination_protection=_flag(app, "terminationProtection", True),
        lambda_memory_mb=read_bench_placement(ROOT / placement, catalog) if placement else {},
        lock=read_lock(ROOT / lock if lock else LOCK_PATH),
    )


def main() -> None:
    app = App()
    try:
        assemble(app, config_from(app))
    except (DeployGateError, LockError) as error:
        print(f"deploy gate: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    app.synth()


if __name__ == "__main__":
    main()
