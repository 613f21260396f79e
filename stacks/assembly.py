"""Catalog + config -> the four stacks, wired by passing constructs; app.py and the tests both call `assemble`."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import App, Environment, Tags

from functions.runtime.package import ModelPackage
from stacks.artifacts import ArtifactsStack
from stacks.batch import BatchStack
from stacks.config import AppConfig
from stacks.deploy_gate import verify_packages
from stacks.gpu_endpoint import GpuEndpointStack
from stacks.nag import apply_checks
from stacks.realtime_api import RealtimeApiStack


@dataclass(frozen=True)
class ServingStacks:
    artifacts: ArtifactsStack
    gpu: GpuEndpointStack | None
    api: RealtimeApiStack
    batch: BatchStack
    packages: dict[str, ModelPackage]

    @property
    def all(self) -> list:
        return [stack for stack in (self.artifacts, self.gpu, self.api, self.batch) if stack is not None]


def assemble(app: App, config: AppConfig) -> ServingStacks:
    """Run the deploy gate first, then build the stacks; nothing is synthesized for an unverified package."""
    packages = verify_packages(config.served_models, config.packages_dir)
    env = Environment(account=config.account, region=config.region)
    prefix = f"ModelServing-{config.stage}"

    artifacts = ArtifactsStack(app, f"{prefix}-Artifacts", config=config, env=env)
    gpu = GpuEndpointStack(app, f"{prefix}-GpuEndpoints", config=config, env=env) if config.sagemaker_models else None
    endpoints = gpu.endpoints if gpu is not None else {}
    api = RealtimeApiStack(app, f"{prefix}-RealtimeApi", config=config, endpoints=endpoints, env=env)
    batch = BatchStack(app, f"{prefix}-Batch", config=config, bucket=artifacts.bucket, endpoints=endpoints, env=env)

    stacks = ServingStacks(artifacts=artifacts, gpu=gpu, api=api, batch=batch, packages=packages)
    for stack in stacks.all:
        Tags.of(stack).add("project", "model-serving")
        Tags.of(stack).add("stage", config.stage)
        for key, value in config.tags.items():
            Tags.of(stack).add(key, value)
    apply_checks(stacks.all)
    return stacks
