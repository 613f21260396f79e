"""Schemathesis against the OpenAPI document the local stack serves: no request it can generate gets a 5xx.

Every operation is called over real HTTP (the front, payload 2.0, the API function in its own process) with cases
generated from the served schema, valid and invalid alike. Two checks decide: schemathesis' `not_a_server_error`,
and `error_body_is_json` below: whoever answers (the function or, for no route, the gateway) answers in JSON.
Hooks aim most cases at the real models (their names, versions, input names and datatypes), so that generated
shapes and data reach the decoders rather than stopping at "model not found" or "unknown input".
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.schemas import OpenApiSchema

from catalog import load_catalog
from local.config import LocalConfig
from local.stack import LocalStack
from stacks.routes import match_route, route_keys
from tests.integration.stack_client import http

MODELS = sorted(load_catalog().models)
MAX_EXAMPLES = 25  # per operation and generation phase; keeps the module well under a minute on two cores
REQUEST_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def stack(packages: dict[str, Path]) -> Iterator[LocalStack]:
    config = LocalConfig(api_port=0, aws_port=0, sagemaker_port=0, bucket="model-serving-fuzz", poll_wait_s=1)
    with LocalStack(config, packages) as running:
        yield running


@dataclass(frozen=True)
class ServedModel:
    """What a model's v2 metadata states: the address a request can reach it at and the tensors it takes."""

    name: str
    version: str
    inputs: tuple[tuple[str, str], ...]  # (name, datatype)


def served_models(stack: LocalStack) -> list[ServedModel]:
    served: list[ServedModel] = []
    for name in MODELS:
        status, _, body = http(stack, "GET", f"/v2/models/{name}")
        assert status == 200, body
        inputs = tuple((tensor["name"], tensor["datatype"]) for tensor in body["inputs"])
        served.extend(ServedModel(name, version, inputs) for version in body["versions"])
    return served


def aimed_at(case: schemathesis.Case, body: dict[str, Any], model: ServedModel, datatypes: bool) -> schemathesis.Case:
    """The generated v2 body with the model's input names (and datatypes): shapes and data stay generated."""
    inputs = [
        {**item, "name": name, **({"datatype": datatype} if datatypes else {})} if isinstance(item, dict) else item
        for item, (name, datatype) in zip(body["inputs"], itertools.cycle(model.inputs), strict=False)
    ]
    case.body = {**body, "inputs": inputs}
    return case


@pytest.fixture(scope="module")
def api_schema(stack: LocalStack) -> OpenApiSchema:
    """The document the running API serves, with hooks that aim most generated requests at the real models."""
    assert stack.info is not None
    schema = schemathesis.openapi.from_url(f"{stack.info.api_url}/openapi.json", timeout=REQUEST_TIMEOUT_S)
    schema.config.update(base_url=stack.info.api_url, request_timeout=REQUEST_TIMEOUT_S)
    models = served_models(stack)
    by_address = {(model.name, model.version): model for model in models}
    by_name = {model.name: model for model in models}

    @schema.hook
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> st.SearchStrategy:
        """A real model (and version) three times in four; otherwise the generated strings (mostly a 404)."""
        if not path_parameters or "name" not in path_parameters:
            return st.just(path_parameters)

        def address(model: ServedModel | None) -> dict[str, Any]:
            if model is None:
                return path_parameters
            replaced = {**path_parameters, "name": model.name}
            if "version" in replaced:
                replaced["version"] = model.version
            return replaced

        return st.sampled_from([*models, None]).map(address)

    @schema.hook
    def flatmap_case(context: Any, case: schemathesis.Case) -> st.SearchStrategy:
        """A v2 body sent to a real model keeps its generated tensors, or takes the model's input names (and types)."""
        name, version = str(case.path_parameters.get("name")), str(case.path_parameters.get("version"))
        model = by_address.get((name, version)) or by_name.get(name)
        body = case.body
        if model is None or not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            return st.just(case)
        return st.sampled_from([None, False, True]).map(
            lambda aim: case if aim is None else aimed_at(case.derive(), body, model, datatypes=aim)
        )

    return schema


@dataclass
class Tally:
    """What the run sent and what came back, for the closing note (shrinking replays count as calls too)."""

    calls: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    by_operation: dict[str, dict[int, int]] = field(default_factory=dict)
    server_errors: dict[str, str] = field(default_factory=dict)  # curl reproducer -> status and body
    unnegatable: list[str] = field(default_factory=list)  # operations without an invalid request to make

    def record(self, case: schemathesis.Case, response: schemathesis.Response) -> None:
        self.calls += 1
        self.by_status[response.status_code] = self.by_status.get(response.status_code, 0) + 1
        statuses = self.by_operation.setdefault(case.operation.label, {})
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            self.server_errors[case.as_curl_command()] = f"{response.status_code} {response.content[:300]!r}"


def error_body_is_json(
    ctx: schemathesis.CheckContext | None, response: schemathesis.Response, case: schemathesis.Case | None
) -> bool | None:
    """Every answer, the function's errors and the gateway's alike, is a JSON document declared as such."""
    content_type = response.headers.get("content-type", [""])[0]
    if not content_type.startswith("application/json"):
        raise AssertionError(f"{response.status_code} answered with content-type {content_type!r}")
    try:
        document = json.loads(response.content)
    except ValueError as error:
        raise AssertionError(f"{response.status_code} body is not JSON: {response.content[:200]!r}") from error
    if response.status_code >= 400 and not (
        isinstance(document, dict) and ("error" in document or "message" in document)
    ):
        raise AssertionError(f"{response.status_code} error body names no error: {document!r}")
    return None


@pytest.mark.parametrize(
    ("status", "content_type", "body", "passes"),
    [
        (200, "application/json", b'{"outputs": []}', True),
        (404, "application/json", b'{"message": "Not Found"}', True),
        (400, "application/json", b'{"error": "unknown input"}', True),
        (502, "text/html", b"<html>Bad Gateway</html>", False),
        (500, "application/json", b"Internal Server Error", False),
        (400, "application/json", b'["no", "error"]', False),
    ],
    ids=["ok", "gateway-404", "function-400", "html", "not-json", "nameless-error"],
)
def test_the_json_check_tells_json_errors_from_others(
    status: int, content_type: str, body: bytes, passes: bool
) -> None:
    request = requests.Request("GET", "http://127.0.0.1/v2").prepare()
    response = schemathesis.Response(status, {"content-type": [content_type]}, body, request, 0.01, True)
    if passes:
        assert error_body_is_json(None, response, None) is None
    else:
        with pytest.raises(AssertionError):
            error_body_is_json(None, response, None)


CHECKS: list[schemathesis.CheckFunction] = [not_a_server_error, error_body_is_json]
BOUNDED = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases every run: a failure here is a regression, not bad luck
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


def fuzz(operation: APIOperation, mode: GenerationMode, session: requests.Session, tally: Tally) -> str | None:
    """Run one operation's generated cases of one mode; the shrunk failure's report, or None."""

    @BOUNDED
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(session=session)
        tally.record(case, response)
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no valid request can be generated"
        tally.unnegatable.append(operation.label)  # e.g. only string path parameters: every value is valid
    except BaseExceptionGroup as failures:  # schemathesis' report: every failed check and a curl reproducer
        return f"{operation.label} ({mode.value}): {failures.message}"
    except (AssertionError, requests.RequestException) as failure:
        return f"{operation.label} ({mode.value}): {failure!r}"
    return None


def test_no_generated_request_gets_a_server_error(
    api_schema: OpenApiSchema, record_property: Callable[[str, object], None]
) -> None:
    # given every operation of the served document (each one the gateway routes), in valid and invalid requests
    operations = []
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the served document is a valid OpenAPI document
        operations.append(result.ok())
    gateway = route_keys(MODELS)
    unrouted = [
        operation.label
        for operation in operations
        if match_route(gateway, operation.method, operation.path.format(name=MODELS[0], version="1")) is None
    ]
    assert operations, "the served document describes no operation"
    assert not unrouted, f"documented but not routed by the gateway: {unrouted}"
    tally, failures = Tally(), []
    started = time.monotonic()

    # when each case goes over real HTTP to the front
    with requests.Session() as session:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                failure = fuzz(operation, mode, session, tally)
                if failure is not None:
                    failures.append(failure)

    print(
        f"\nschemathesis {schemathesis.__version__}: {tally.calls} cases over {len(operations)} operations "
        f"in {time.monotonic() - started:.1f} s, statuses {dict(sorted(tally.by_status.items()))}, "
        f"{len(tally.server_errors)} distinct server errors; no invalid request for {tally.unnegatable}"
    )
    for label, statuses in tally.by_operation.items():
        print(f"  {label}: {dict(sorted(statuses.items()))}")
    for reproducer, answer in tally.server_errors.items():
        print(f"  {answer}\n    {reproducer}")
    record_property("fuzz_cases", tally.calls)
    record_property("fuzz_operations", len(operations))
    record_property("fuzz_server_errors", len(tally.server_errors))

    # then no answer is a server error and every answer is JSON
    assert not failures, "\n\n".join(failures)
