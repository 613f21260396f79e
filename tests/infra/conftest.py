"""Infra fixtures: the whole CDK app is synthesized ONCE per session (jsii is slow) and every test reads from it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")

from aws_cdk import App
from aws_cdk.assertions import Template

from catalog import load_catalog
from registry.lock import lock_for
from stacks.assembly import ServingStacks, assemble, cdk_json_context
from stacks.config import AppConfig
from tests.infra.package_factory import build_context, write_package

STAND_IN_ENV = "INFRA_STAND_IN_PACKAGES"


def cdk_context() -> dict:
    """The context `cdk synth` runs with (feature flags included), so tests build what the CLI builds."""
    return cdk_json_context()


@pytest.fixture(scope="session")
def infra_packages(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The session's real tiny packages; INFRA_STAND_IN_PACKAGES=1 swaps in manifest-only stand-ins for a fast loop."""
    if os.environ.get(STAND_IN_ENV) == "1":
        root = tmp_path_factory.mktemp("stand-in-packages")
        return {entry.name: write_package(root / entry.name, entry) for entry in load_catalog().models.values()}
    return request.getfixturevalue("packages")


@dataclass(frozen=True)
class Synthesized:
    config: AppConfig
    stacks: ServingStacks
    templates: dict[str, Template]
    outdir: Path

    def template(self, kind: str) -> Template:
        return self.templates[kind]

    def resources(self, kind: str, resource_type: str) -> dict[str, dict]:
        return self.templates[kind].find_resources(resource_type)


@pytest.fixture(scope="session")
def synthesized(infra_packages: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Build the image context (a replica of the repo layout), assemble the stacks, synthesize once."""
    context = build_context(tmp_path_factory.mktemp("image-context"), infra_packages)
    config = AppConfig(
        catalog=load_catalog(),
        stage="test",
        account="123456789012",
        region="us-east-1",
        source_root=context,
        packages_dir=context / "build" / "models",
        lock=lock_for(infra_packages),  # the session's packages are the approved versions
    )
    outdir = tmp_path_factory.mktemp("cdk-out")
    app = App(context=cdk_context(), outdir=str(outdir))
    stacks = assemble(app, config)
    assembly = app.synth()
    kinds = {
        "artifacts": stacks.artifacts,
        "alarm_topic": stacks.alarm_topic,
        "gpu": stacks.gpu,
        "api": stacks.api,
        "batch": stacks.batch,
        "monitoring": stacks.monitoring,
    }
    templates = {
        kind: Template.from_json(assembly.get_stack_by_name(stack.stack_name).template)
        for kind, stack in kinds.items()
        if stack is not None
    }
    return Synthesized(config=config, stacks=stacks, templates=templates, outdir=outdir)


def literal_environment(function_properties: dict) -> dict[str, str]:
    """A function's environment variables without those CloudFormation resolves at deploy time (bucket, endpoint)."""
    variables = function_properties["Environment"]["Variables"]
    return {name: value for name, value in variables.items() if isinstance(value, str)}


def resolve_outputs(synthesized: Synthesized, value: object) -> object:
    """A consumer's weak cross-stack references (`Fn::GetStackOutput`) replaced by what the producer exports."""
    if isinstance(value, list):
        return [resolve_outputs(synthesized, item) for item in value]
    if not isinstance(value, dict):
        return value
    if "Fn::GetStackOutput" in value:
        reference = value["Fn::GetStackOutput"]
        (producer,) = [s for s in synthesized.stacks.all if s.stack_name == reference["StackName"]]
        (kind,) = [k for k, t in synthesized.templates.items() if getattr(synthesized.stacks, k) is producer]
        return synthesized.template(kind).to_json()["Outputs"][reference["OutputName"]]["Value"]
    return {key: resolve_outputs(synthesized, item) for key, item in value.items()}
