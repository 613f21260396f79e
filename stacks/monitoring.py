"""Monitoring: each served model's capture path, its daily drift check and its dashboard; changes with none of the
serving code, so it deploys on its own."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.capture import CaptureStream
from stacks.config import AppConfig, pascal
from stacks.dashboard import model_dashboard
from stacks.drift import DriftCheck
from stacks.realtime_api import RealtimeApiStack


class MonitoringStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        bucket: s3.IBucket,
        api: RealtimeApiStack,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        platform = config.catalog.platform
        self.captures: dict[str, CaptureStream] = {}
        self.drift_checks: dict[str, DriftCheck] = {}
        for entry in config.served_models:
            name = entry.name
            function = api.functions[name]
            self.captures[name] = CaptureStream(
                self,
                f"{pascal(name)}Capture",
                model=name,
                bucket=bucket,
                capture_prefix=platform.capture_prefix,
                source=function.log_group,
                log_retention_days=platform.log_retention_days,
            )
            drift = DriftCheck(self, f"{pascal(name)}Drift", config=config, entry=entry, bucket=bucket)
            self.drift_checks[name] = drift
            model_dashboard(
                self,
                f"{pascal(name)}Dashboard",
                model=name,
                api=function,
                canary_alarms=api.deployments[name].alarms,
                drift_alarm=drift.drift_alarm,
                namespace=config.metrics_namespace,
            )
