"""Where exceptions become HTTP answers, in one place: every error body is {"error": "..."}, 5xx shows no internals;
and where every 4xx/5xx answered is counted, since a handled exception never reaches Lambda's own Errors metric."""

from __future__ import annotations

import re
from collections.abc import Container, Iterable
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel

from functions.api.body import is_undecodable_body
from functions.api.envelope import (
    EnvelopeError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    ResponseTooLargeError,
    UnsupportedMediaTypeError,
)
from functions.runtime.errors import (
    BackendError,
    BackendTimeoutError,
    InputError,
    OutputError,
    TooManyInstancesError,
    UnknownModelError,
)

ENVELOPE_STATUS: dict[type[EnvelopeError], HTTPStatus] = {
    PayloadTooLargeError: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ResponseTooLargeError: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    UnsupportedMediaTypeError: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    MethodNotAllowedError: HTTPStatus.METHOD_NOT_ALLOWED,
}
SERVER_ERRORS = "ServerErrors"  # Count of 5xx answered: what the stacks alarm on
CLIENT_ERRORS = "ClientErrors"  # Count of 4xx answered
MODEL_PATH = re.compile(r"^/v[12]/models/([^/:]+)")


def count_error_answer(metrics: Metrics, status: int, path: str, models: Container[str], service: str) -> None:
    """One ServerErrors (5xx) or ClientErrors (4xx), whatever produced the answer; dimensions [service], plus
    [service, model] when the path names a served model (only served names: callers must not mint dimensions)."""
    if status < 400:
        return
    named = MODEL_PATH.match(path)
    if named and named.group(1) in models:
        metrics.add_dimension(name="model", value=named.group(1))
        metrics.add_dimensions(service=service)
    metrics.add_metric(name=SERVER_ERRORS if status >= 500 else CLIENT_ERRORS, unit=MetricUnit.Count, value=1)


def route_pattern(rule: str) -> re.Pattern[str]:
    """A route rule such as /v2/models/<name>/infer as a regex over request paths (one path segment per <param>)."""
    return re.compile("^" + re.sub(r"<\w+>", "[^/]+", re.escape(rule).replace(r"\<", "<").replace(r"\>", ">")) + "$")


def describe_validation_errors(errors: Any) -> str:
    """Pydantic's problems as one readable line: which field, what is wrong (no Python internals)."""
    problems = []
    for problem in errors:
        location = [str(part) for part in problem.get("loc", ())]
        kind = problem.get("type", "")
        if kind == "json_invalid":
            detail = problem.get("ctx", {}).get("error", "JSON decode error")
            problems.append(f"malformed JSON body: {detail}")
            continue
        if location == ["body"] and kind == "missing":
            problems.append("request body is required")
            continue
        field = ".".join(location[1:] if location[:1] == ["body"] else location) or "body"
        problems.append(f"{field}: {problem.get('msg', kind)}")
    return "invalid request: " + "; ".join(problems)


class ErrorBody(BaseModel):
    """Every error answer's body."""

    error: str


def register_error_handlers(
    app: APIGatewayHttpResolver,
    *,
    logger: Logger,
    routes: Iterable[tuple[str, str]],
) -> None:
    """Map every error to its HTTP answer on `app`; `routes` ((method, rule) pairs) tell a 405 from a 404."""
    patterns = [(method.upper(), route_pattern(rule)) for method, rule in routes]

    def error_response(status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> Response:
        return Response(
            status_code=status, content_type=content_types.APPLICATION_JSON, body={"error": message}, headers=headers
        )

    @app.exception_handler(EnvelopeError)
    def envelope_error(error: EnvelopeError) -> Response:
        headers = {"Allow": ", ".join(error.allowed)} if isinstance(error, MethodNotAllowedError) else None
        return error_response(ENVELOPE_STATUS.get(type(error), HTTPStatus.BAD_REQUEST), str(error), headers)

    @app.exception_handler(TooManyInstancesError)
    def too_many_instances(error: TooManyInstancesError) -> Response:
        return error_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(error))

    @app.exception_handler(InputError)
    def bad_input(error: InputError) -> Response:
        return error_response(HTTPStatus.BAD_REQUEST, str(error))

    @app.exception_handler(UnknownModelError)
    def unknown_model(error: UnknownModelError) -> Response:
        return error_response(HTTPStatus.NOT_FOUND, str(error))

    @app.exception_handler(RequestValidationError)
    def invalid_request(error: RequestValidationError) -> Response:
        return error_response(HTTPStatus.BAD_REQUEST, describe_validation_errors(error.errors()))

    @app.not_found
    def route_not_found(_: NotFoundError) -> Response:
        """404 for unknown paths; 405 (with Allow) when the path exists under other methods."""
        method = app.current_event.http_method.upper()
        path = app.current_event.path
        allowed = sorted({verb for verb, pattern in patterns if pattern.match(path)})
        if allowed:
            return envelope_error(MethodNotAllowedError(f"{method} is not allowed on {path}", allowed))
        return error_response(HTTPStatus.NOT_FOUND, f"no route for {method} {path}")

    @app.exception_handler(OutputError)
    def unsendable_output(error: OutputError) -> Response:
        logger.error("model output not sendable", extra={"reason": str(error)})
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, str(error))

    @app.exception_handler(BackendError)
    def backend_failed(error: BackendError) -> Response:
        logger.exception("inference backend failed")
        return error_response(HTTPStatus.BAD_GATEWAY, "the model backend failed; see the function logs")

    @app.exception_handler(BackendTimeoutError)
    def backend_timed_out(error: BackendTimeoutError) -> Response:
        logger.exception("inference backend timed out")
        return error_response(HTTPStatus.GATEWAY_TIMEOUT, "the model endpoint did not answer in time; try again")

    @app.exception_handler(ServiceError)
    def service_error(error: ServiceError) -> Response:
        return error_response(HTTPStatus(error.status_code), str(error.msg))

    @app.exception_handler(Exception)
    def unexpected(error: Exception) -> Response:
        logger.exception("unhandled error")
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    @app.exception_handler(UnicodeDecodeError)
    def undecodable(error: UnicodeDecodeError) -> Response:
        """API Gateway base64-encodes a body that is not UTF-8 text; Powertools fails decoding it before validation."""
        if not is_undecodable_body(app.current_event, error):
            return unexpected(error)
        message = f"malformed JSON body: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start})"
        return error_response(HTTPStatus.BAD_REQUEST, message)
