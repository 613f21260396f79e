"""HTTP inference API: Open Inference Protocol v2 and KServe v1 on API Gateway HTTP API (payload 2.0).

Thin by design: module-level settings, models (loaded and warmed once per sandbox), logger, tracer, metrics and app;
routes turn documents into runtime calls; every error becomes an HTTP answer in the one section at the bottom.
"""

from __future__ import annotations

import json
import time
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.api.envelope import (
    EnvelopeError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    check_envelope,
)
from functions.api.kserve import (
    ModelMetadata,
    PredictRequest,
    PredictResponse,
    model_metadata,
    requested_outputs,
    v1_inputs,
    v2_inputs,
    v2_response,
)
from functions.runtime.errors import BackendError, InputError, TooManyInstancesError, UnknownModelError
from functions.runtime.models import ServedModel, get_model, load_models
from functions.runtime.protocol import InferRequest, InferResponse
from functions.runtime.settings import Settings

SERVER_NAME = "serverless-model-serving"

settings = Settings.from_env()
logger = Logger()  # service from POWERTOOLS_SERVICE_NAME
tracer = Tracer()
metrics = Metrics(namespace=settings.metrics_namespace)
app = APIGatewayHttpResolver(enable_validation=True)
models: dict[str, ServedModel] = load_models(settings)


def served(name: str, version: str | None = None) -> ServedModel:
    """The named model (and version, when the path names one), recorded as the request's metric dimension."""
    model = get_model(models, name)
    if version is not None and version != model.version:
        raise UnknownModelError(f"model {name!r} has no version {version!r} (served: {model.version})")
    metrics.add_dimension(name="model", value=name)
    return model


def record_inference(model: ServedModel, batch_size: int, started: float) -> None:
    metrics.add_metric(
        name="InferenceLatency", unit=MetricUnit.Milliseconds, value=(time.perf_counter() - started) * 1e3
    )
    metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=batch_size)
    logger.debug("scored", extra={"model": model.name, "batch_size": batch_size})


def json_response(document: dict[str, Any]) -> Response[str]:
    """Serialised once here: a dict body would be walked again by the resolver's encoder (costly for embeddings)."""
    body = json.dumps(document, separators=(",", ":"), allow_nan=False)
    return Response(status_code=HTTPStatus.OK, content_type=content_types.APPLICATION_JSON, body=body)


def envelope_middleware(app: APIGatewayHttpResolver, next_middleware: Any) -> Response:
    """Size and content type are checked before the route runs (invalid bodies are checked in invalid_request)."""
    check_envelope(app.current_event, settings.max_body_bytes)
    return next_middleware(app)


app.use(middlewares=[envelope_middleware])


# --- Open Inference Protocol v2 -------------------------------------------------------------------------------------


@app.get("/v2")
def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": "2", "extensions": []}


@app.get("/v2/health/live")
def live() -> dict[str, Any]:
    return {"live": True}


@app.get("/v2/health/ready")
def ready() -> Response[dict[str, Any]]:
    is_ready = bool(models) and all(model.ready for model in models.values())
    status = HTTPStatus.OK if is_ready else HTTPStatus.SERVICE_UNAVAILABLE
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body={"ready": is_ready})


@app.get(
    "/v2/models/<name>",
    responses={200: {"description": "Model metadata", "content": {"application/json": {"model": ModelMetadata}}}},
)
def metadata(name: str) -> dict[str, Any]:
    return model_metadata(served(name))


@app.get("/v2/models/<name>/versions/<version>")
def version_metadata(name: str, version: str) -> dict[str, Any]:
    return model_metadata(served(name, version))


@app.get("/v2/models/<name>/ready")
def model_ready(name: str) -> Response[dict[str, Any]]:
    return _readiness(served(name))


@app.get("/v2/models/<name>/versions/<version>/ready")
def version_ready(name: str, version: str) -> Response[dict[str, Any]]:
    return _readiness(served(name, version))


def _readiness(model: ServedModel) -> Response[dict[str, Any]]:
    status = HTTPStatus.OK if model.ready else HTTPStatus.SERVICE_UNAVAILABLE
    body = {"name": model.name, "ready": model.ready}
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


_INFER_RESPONSES: dict[int, OpenAPIResponse] = {
    200: {"description": "Inference result", "content": {"application/json": {"model": InferResponse}}}
}


@app.post("/v2/models/<name>/infer", responses=_INFER_RESPONSES)
def infer(name: str, request: InferRequest) -> Response[str]:
    return _infer(served(name), request)


@app.post("/v2/models/<name>/versions/<version>/infer", responses=_INFER_RESPONSES)
def version_infer(name: str, version: str, request: InferRequest) -> Response[str]:
    return _infer(served(name, version), request)


def _infer(model: ServedModel, request: InferRequest) -> Response[str]:
    started = time.perf_counter()
    outputs = requested_outputs(model, request)
    inference = model.infer(v2_inputs(model, request))
    record_inference(model, inference.batch_size, started)
    return json_response(v2_response(model, inference, outputs, request.id))


_PREDICT_RESPONSES: dict[int, OpenAPIResponse] = {
    200: {"description": "Predictions", "content": {"application/json": {"model": PredictResponse}}},
}


# --- KServe v1 -------------------------------------------------------------------------------------------------------


@app.get("/v1/models/<name>")
def v1_model(name: str) -> dict[str, Any]:
    if name.endswith(":predict"):
        raise MethodNotAllowedError(f"GET is not allowed on /v1/models/{name}; use POST", allowed=["POST"])
    model = served(name)
    return {"name": model.name, "ready": model.ready}


@app.post("/v1/models/<name>:predict", responses=_PREDICT_RESPONSES)
def predict(name: str, request: PredictRequest) -> Response[str]:
    model = served(name)
    started = time.perf_counter()
    inference = model.infer(v1_inputs(model, request))
    record_inference(model, inference.batch_size, started)
    return json_response({"predictions": model.processor.predictions(inference.outputs)})


# --- OpenAPI ---------------------------------------------------------------------------------------------------------


@app.get("/openapi.json", include_in_schema=False)
def openapi() -> Response[str]:
    schema = app.get_openapi_json_schema(title="Serverless model serving", version="1.0.0")
    return Response(status_code=HTTPStatus.OK, content_type=content_types.APPLICATION_JSON, body=schema)


# --- Errors: the one place that maps exceptions to HTTP answers ------------------------------------------------------


def error_response(status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> Response:
    """Every error body is {"error": "..."}; 5xx answers never carry internals."""
    metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=1)
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body={"error": message}, headers=headers
    )


ENVELOPE_STATUS: dict[type[EnvelopeError], HTTPStatus] = {
    PayloadTooLargeError: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    UnsupportedMediaTypeError: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    MethodNotAllowedError: HTTPStatus.METHOD_NOT_ALLOWED,
}


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
    """Body validation runs before any middleware: the envelope is checked here first, so a 7 MB or non-JSON
    body answers 413/415 rather than 400."""
    try:
        check_envelope(app.current_event, settings.max_body_bytes)
    except EnvelopeError as envelope:
        return envelope_error(envelope)
    return error_response(HTTPStatus.BAD_REQUEST, describe_validation_errors(error.errors()))


@app.exception_handler(RequestUnsupportedContentType)
def unsupported_content_type(_: RequestUnsupportedContentType) -> Response:
    try:
        check_envelope(app.current_event, settings.max_body_bytes)
    except EnvelopeError as envelope:
        return envelope_error(envelope)
    return error_response(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported content type; send application/json")


@app.not_found
def route_not_found(_: NotFoundError) -> Response:
    """404 for unknown paths; 405 (with Allow) when the path exists under other methods."""
    method = app.current_event.http_method.upper()
    path = app.current_event.path
    allowed = sorted({route.method for route in app._static_routes + app._dynamic_routes if route.rule.match(path)})
    if allowed:
        return envelope_error(MethodNotAllowedError(f"{method} is not allowed on {path}", allowed))
    return error_response(HTTPStatus.NOT_FOUND, f"no route for {method} {path}")


@app.exception_handler(BackendError)
def backend_failed(error: BackendError) -> Response:
    logger.exception("inference backend failed")
    return error_response(HTTPStatus.BAD_GATEWAY, "the model backend failed; see the function logs")


@app.exception_handler(ServiceError)
def service_error(error: ServiceError) -> Response:
    return error_response(HTTPStatus(error.status_code), str(error.msg))


@app.exception_handler(Exception)
def unexpected(error: Exception) -> Response:
    logger.exception("unhandled error")
    return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")


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


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler(capture_response=False)  # responses can be large (embeddings); keep traces small
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
