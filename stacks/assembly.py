"""Catalog + config -> the stacks, wired by passing constructs; app.py and the tests both call `assemble`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import App, Aspects, Environment, Stack, Tags

from catalog import ROOT
from functions.runtime.package import ModelPackage
from stacks.alarm_topic import AlarmTopicStack, NotifyOnAlarm
from stacks.artifacts import ArtifactsStack
from stacks.batch import BatchStack
from stacks.config import AppConfig
from stacks.deploy_gate import verify_packages
from stacks.gpu_endpoint import GpuEndpointStack
from stacks.monitoring import MonitoringStack
from stacks.nag import apply_checks
from stacks.realtime_api import RealtimeApiStack


@dataclass(frozen=True)
class ServingStacks:
    artifacts: ArtifactsStack
    alarm_topic: AlarmTopicStack
    gpu: GpuEndpointStack | None
    api: RealtimeApiStack
    batch: BatchStack
    monitoring: MonitoringStack
    packages: dict[str, ModelPackage]

    @property
    def all(self) -> list[Stack]:
        stacks = (self.artifacts, self.alarm_topic, self.gpu, self.api, self.batch, self.monitoring)
        return [stack for stack in stacks if stack is not None]


def cdk_json_context(root: Path = ROOT) -> dict[str, Any]:
    """The context `cdk synth` runs with (feature flags included), for an app built in-process (tests, local stack)."""
    context: dict[str, Any] = json.loads((root / "cdk.json").read_text(encoding="utf-8"))["context"]
    return context


def assemble(app: App, config: AppConfig) -> ServingStacks:
    """Run the deploy gate first, then build the stacks; nothing is synthesized for an unverified package."""
    packages = verify_packages(config.served_models, config.packages_dir, config.lock)
    env = Environment(account=config.account, region=config.region)
    prefix = config.stack_prefix

    artifacts = ArtifactsStack(app, f"{prefix}-Artifacts", config=config, env=env)
    alarm_topic = AlarmTopicStack(app, f"{prefix}-AlarmTopic", config=config, env=env)
    gpu = GpuEndpointStack(app, f"{prefix}-GpuEndpoints", config=config, env=env) if config.sagemaker_models else None
    endpoints = gpu.endpoints if gpu is not None else {}
    api = RealtimeApiStack(app, f"{prefix}-RealtimeApi", config=config, endpoints=endpoints, env=env)
    batch = BatchStack(app, f"{prefix}-Batch", config=config, bucket=artifacts.bucket, endpoints=endpoints, env=env)
    # A scorer runs the same image as its API function: it ships only after that image's canary passed (a canary
    # that rolls back fails the API stack's update, and `cdk deploy --all` stops before this stack).
    batch.add_stack_dependency(api, "batch scorers ship an image only after the API canary of the same image passed")
    monitoring = MonitoringStack(app, f"{prefix}-Monitoring", config=config, bucket=artifacts.bucket, api=api, env=env)

    stacks = ServingStacks(
        artifacts=artifacts,
        alarm_topic=alarm_topic,
        gpu=gpu,
        api=api,
        batch=batch,
        monitoring=monitoring,
        packages=packages,
    )
    for stack in stacks.all:
        Aspects.of(stack).add(NotifyOnAlarm(alarm_topic.topic))
        Tags.of(stack).add("project", "model-serving")
        Tags.of(stack).add("stage", config.stage)
        for key, value in config.tags.items():
            Tags.of(stack).add(key, value)
    apply_checks(stacks.all)
    return stacks
