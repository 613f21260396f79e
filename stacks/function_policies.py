"""Each model function's IAM statements exactly as the stacks synthesize them, so the local stack can run every
function under its own policy instead of a hand-written copy that drifts from the constructs."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from aws_cdk import App, CfnElement, Stack

from stacks.assembly import ServingStacks, assemble, cdk_json_context
from stacks.config import AppConfig
from stacks.model_function import ModelFunction

# The pseudo parameters a statement may reference, with what `resolve_statements` puts in their place by default.
PSEUDO_PARAMETERS = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}


@dataclass(frozen=True)
class FunctionPolicy:
    """One role's statements, cross-stack outputs replaced by the intrinsic they export, and every `Ref` and
    `Fn::GetAtt` in them as a reference (`LogicalId` or `LogicalId.Attribute`, CloudFormation's own notation) with
    the CloudFormation type it points at: what the caller maps to its own names and ARNs."""

    statements: list[dict[str, Any]]
    references: dict[str, str]


def synthesize_function_policies(config: AppConfig) -> dict[tuple[str, str], FunctionPolicy]:
    """Assemble and synthesize the app for `config` (cdk.json's feature flags), then read the policies back."""
    with tempfile.TemporaryDirectory(prefix="function-policies-") as outdir:
        app = App(context=cdk_json_context(), outdir=outdir)
        return function_policies(assemble(app, config))


def function_policies(stacks: ServingStacks) -> dict[tuple[str, str], FunctionPolicy]:
    """`{(kind, model): FunctionPolicy}` for kind `api` and `batch`, read from the synthesized templates."""
    assembly = cast(App, stacks.api.node.root).synth()  # cached: a synthesized app is not synthesized again
    templates = {stack.stack_name: assembly.get_stack_by_name(stack.stack_name).template for stack in stacks.all}
    outputs = _exported_values(templates)
    types = {logical_id: body["Type"] for t in templates.values() for logical_id, body in t["Resources"].items()}
    policies: dict[tuple[str, str], FunctionPolicy] = {}
    for kind, stack in (("api", stacks.api), ("batch", stacks.batch)):
        functions: Mapping[str, ModelFunction] = stack.functions
        for model, function in functions.items():
            statements = _replace_outputs(_role_statements(templates[stack.stack_name], stack, function), outputs)
            references = {ref: types[ref.split(".")[0]] for ref in sorted(_references(statements))}
            policies[(kind, model)] = FunctionPolicy(statements=statements, references=references)
    return policies


def resolve_statements(
    statements: list[dict[str, Any]], values: Mapping[str, str], pseudo: Mapping[str, str] = PSEUDO_PARAMETERS
) -> list[dict[str, Any]]:
    """Plain-string statements: each reference (a `FunctionPolicy.references` key) becomes `values[reference]`,
    each pseudo parameter its value, each `Fn::Join` its string."""

    def resolve(value: Any) -> Any:
        if isinstance(value, list):
            return [resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if "Ref" in value and value["Ref"] in pseudo:
            return pseudo[value["Ref"]]
        if "Ref" in value or "Fn::GetAtt" in value:
            reference = _reference(value)
            if reference not in values:
                raise KeyError(f"no value given for {reference} (the statements reference it)")
            return values[reference]
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return separator.join(resolve(part) for part in parts)
        return {key: resolve(item) for key, item in value.items()}

    return [resolve(statement) for statement in statements]


def _reference(intrinsic: dict[str, Any]) -> str:
    """`{"Ref": "Id"}` -> "Id"; `{"Fn::GetAtt": ["Id", "Arn"]}` -> "Id.Arn"."""
    if "Ref" in intrinsic:
        return str(intrinsic["Ref"])
    logical_id, attribute = intrinsic["Fn::GetAtt"]
    return f"{logical_id}.{attribute}"


def _role_statements(template: dict[str, Any], stack: Stack, function: ModelFunction) -> list[dict[str, Any]]:
    """The role's inline policies plus every AWS::IAM::Policy attached to it, in template order."""
    role_id = stack.resolve(stack.get_logical_id(cast(CfnElement, function.role.node.default_child)))
    statements: list[dict[str, Any]] = []
    for logical_id, body in template["Resources"].items():
        properties = body.get("Properties", {})
        if logical_id == role_id:
            statements += [
                s for policy in properties.get("Policies", []) for s in policy["PolicyDocument"]["Statement"]
            ]
        elif body["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in properties.get("Roles", []):
            statements += properties["PolicyDocument"]["Statement"]
    return statements


def _exported_values(templates: Mapping[str, dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """(stack name, output name) and ("", export name) -> the value the producing stack exports."""
    values: dict[tuple[str, str], Any] = {}
    for stack_name, template in templates.items():
        for output_name, output in template.get("Outputs", {}).items():
            values[(stack_name, output_name)] = output["Value"]
            if "Export" in output:
                values[("", output["Export"]["Name"])] = output["Value"]
    return values


def _replace_outputs(value: Any, outputs: Mapping[tuple[str, str], Any]) -> Any:
    """Weak (`Fn::GetStackOutput`) and strong (`Fn::ImportValue`) cross-stack references -> the exported intrinsic."""
    if isinstance(value, list):
        return [_replace_outputs(item, outputs) for item in value]
    if not isinstance(value, dict):
        return value
    if "Fn::GetStackOutput" in value:
        reference = value["Fn::GetStackOutput"]
        return outputs[(reference["StackName"], reference["OutputName"])]
    if "Fn::ImportValue" in value and isinstance(value["Fn::ImportValue"], str):
        return outputs[("", value["Fn::ImportValue"])]
    return {key: _replace_outputs(item, outputs) for key, item in value.items()}


def _references(value: Any) -> set[str]:
    if isinstance(value, list):
        return set().union(*(_references(item) for item in value))
    if not isinstance(value, dict):
        return set()
    if "Ref" in value or "Fn::GetAtt" in value:
        reference = _reference(value)
        return set() if reference.startswith("AWS::") else {reference}
    return set().union(*(_references(item) for item in value.values()))
