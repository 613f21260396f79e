"""Request bodies: the envelope checked (size, content type: `functions.api.envelope`), then strict JSON validated
once against the route's compiled pydantic model: every failure is a RequestValidationError, which the error handlers
answer 400 (`malformed JSON body: ...`, `invalid request: ...`).

The resolver's own OpenAPI validation is off: it re-inspected each route's signature and rebuilt the headers on every
request, a large share of a batch-1 request's handler work. `with_validated_body` keeps the route's signature, so the
OpenAPI document still describes the body.

`json.loads` alone raises RecursionError for deep nesting, a bare ValueError for integer literals over Python's digit
limit, and accepts NaN/Infinity, which are not JSON. A body that is not UTF-8 never reaches the parser: Powertools
decodes it first, so `is_undecodable_body` lets the error handlers tell that UnicodeDecodeError from a real bug.
"""

from __future__ import annotations

import base64
import binascii
import functools
import inspect
import json
import sys
import typing
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from pydantic import BaseModel, ValidationError

from functions.api.envelope import check_envelope

Body = TypeVar("Body", bound=BaseModel)

MAX_INTEGER_DIGITS = sys.get_int_max_str_digits()


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def parse_json_body(text: str) -> Any:
    """The resolver's `json_body_deserializer`: json.loads, with every failure a JSONDecodeError naming the problem."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("arrays or objects nested too deeply", text, 0) from None
    except ValueError as error:
        message = str(error)
        if "integer string conversion" in message:
            message = f"an integer literal has more than {MAX_INTEGER_DIGITS} digits"
        raise json.JSONDecodeError(message, text, 0) from None


def is_undecodable_body(event: APIGatewayProxyEventV2, error: UnicodeDecodeError) -> bool:
    """True when `error` came from decoding this request's body (API Gateway base64-encodes bodies it cannot pass
    as text); any other UnicodeDecodeError is a bug and stays a 500."""
    if not (event.is_base64_encoded and event.body):
        return False
    try:
        return base64.b64decode(event.body) == error.object
    except binascii.Error:
        return False


def read_body(event: APIGatewayProxyEventV2, model: type[Body]) -> Body:
    """The body as `model`, or a RequestValidationError whose problems are located under `body` (as the resolver's
    validation would have put them)."""
    try:
        document = event.json_body
    except json.JSONDecodeError as error:
        problem = {"type": "json_invalid", "loc": ("body", error.pos), "msg": "JSON decode error"}
        raise RequestValidationError([{**problem, "ctx": {"error": error.msg}}]) from None
    if document is None:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    try:
        return model.model_validate(document)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**problem, "loc": ("body", *problem["loc"])} for problem in problems]) from None


def with_validated_body(
    app: APIGatewayHttpResolver, route: Callable[..., Any], max_body_bytes: int
) -> Callable[..., Any]:
    """`route`, handed its pydantic-model parameter (if it has one) read from the current request's body, once the
    envelope (size, content type) passed: only routes that read a body check one, so a GET's body is ignored."""
    hints = typing.get_type_hints(route)
    bodies = [
        (name, hint)
        for name, hint in hints.items()
        if name != "return" and isinstance(hint, type) and issubclass(hint, BaseModel)
    ]
    if not bodies:
        return route
    ((parameter, model),) = bodies

    @functools.wraps(route)
    def with_body(**path_parameters: Any) -> Any:
        event = app.current_event
        check_envelope(event, max_body_bytes)
        return route(**path_parameters, **{parameter: read_body(event, model)})

    # the route's signature, its annotations resolved where it was written: the OpenAPI document reads it from here
    with_body.__signature__ = inspect.signature(route, eval_str=True)  # type: ignore[attr-defined]
    return with_body
