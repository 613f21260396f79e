"""The HTTP inference API (Open Inference Protocol v2 and KServe v1 on API Gateway HTTP API, payload 2.0), built
from settings and loaded models: the Lambda entry point, the local stack, the bench and the tests all call
`create_api`, so none of them configures a function through the environment or at import.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.metrics import MetricUnit

from functions.api.body import parse_json_body, with_validated_body
from functions.api.envelope import MethodNotAllowedError, check_response_size
from functions.api.errors import ErrorBody, count_error_answer, register_error_handlers
from functions.api.v1 import PredictRequest, PredictResponse, v1_instances
from functions.api.v2 import ModelMetadata, model_metadata, v2_batch, v2_response
from functions.runtime.models import ModelVersions, ServedModel
from functions.runtime.settings import Settings
from functions.runtime.telemetry import function_telemetry
from functions.runtime.tensors import InferRequest, InferResponse, requested_outputs

SERVER_NAME = "serverless-model-serving"
Handler = Callable[[dict[str, Any], Any], Any]

_CLIENT_ERROR: OpenAPIResponse = {
    "description": "The request cannot be scored; `error` names the problem",
    "content": {"application/json": {"model": ErrorBody}},
}
_INFER_RESPONSES: dict[int, OpenAPIResponse] = {
    200: {"description": "Inference result", "content": {"application/json": {"model": InferResponse}}},
    400: _CLIENT_ERROR,
}
_PREDICT_RESPONSES: dict[int, OpenAPIResponse] = {
    200: {"description": "Predictions", "content": {"application/json": {"model": PredictResponse}}},
    400: _CLIENT_ERROR,
}
_METADATA_RESPONSES: dict[int, OpenAPIResponse] = {
    200: {"description": "Model metadata", "content": {"application/json": {"model": ModelMetadata}}}
}


@dataclass(frozen=True)
class ApiFunction:
    """One API function: its settings, models, resolver, and the Lambda handler wrapping them."""

    settings: Settings
    models: Mapping[str, ServedModel]
    app: APIGatewayHttpResolver
    lambda_handler: Handler


def json_response(
    document: dict[str, Any], status: HTTPStatus = HTTPStatus.OK, *, max_bytes: int | None = None
) -> Response[str]:
    """Serialised once here, by orjson: a dict body would be walked again by the resolver's encoder, and the standard
    library's encoder is the slowest step of an embeddings answer. orjson would write NaN as null: model outputs are
    checked finite before they get here (`functions.runtime.models.check_finite`).

    With `max_bytes`, an answer Lambda could not return is refused (ResponseTooLargeError, a 413) instead.
    """
    body = orjson.dumps(document).decode()
    if max_bytes is not None:
        check_response_size(body, max_bytes)
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def create_api(settings: Settings, models: Mapping[str, ServedModel]) -> ApiFunction:
    """The resolver with every route and error mapping, and the decorated Lambda handler around it."""
    logger, tracer, metrics = function_telemetry(settings)
    app = APIGatewayHttpResolver(json_body_deserializer=parse_json_body)  # bodies: checked by with_validated_body
    routes: list[tuple[str, str]] = []

    def route(method: str, rule: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        routes.append((method, rule))

        def register(function: Callable[..., Any]) -> Callable[..., Any]:
            return app.route(rule, method, **options)(with_validated_body(app, function, settings.max_body_bytes))

        return register

    versions = ModelVersions(models, settings)

    def served(name: str, version: str | None = None) -> ServedModel:
        """The named model: the served version, or the version the path names (loaded on demand)."""
        return versions.get(name, version)

    def scored(name: str, version: str | None = None) -> ServedModel:
        """A model about to score: the request's metrics (latency, or an error) carry it as their dimension.

        Only scoring routes set it: Powertools keeps dimensions of an invocation that published no metric.
        """
        model = served(name, version)
        metrics.add_dimension(name="model", value=name)
        return model

    def record_inference(model: ServedModel, batch_size: int, started: float) -> None:
        latency_ms = (time.perf_counter() - started) * 1e3
        metrics.add_metric(name="InferenceLatency", unit=MetricUnit.Milliseconds, value=latency_ms)
        metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=batch_size)
        logger.debug("scored", extra={"model": model.name, "batch_size": batch_size})

    def readiness(model: ServedModel) -> Response[str]:
        is_ready = model.ready  # for an endpoint model, a cached answer or a probe call
        return json_response(
            {"name": model.name, "ready": is_ready}, HTTPStatus.OK if is_ready else HTTPStatus.SERVICE_UNAVAILABLE
        )

    # --- Open Inference Protocol v2 ---------------------------------------------------------------------------------

    @route("GET", "/v2")
    def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": "2", "extensions": []}

    @route("GET", "/v2/health/live")
    def live() -> dict[str, Any]:
        return {"live": True}

    @route("GET", "/v2/health/ready")
    def ready() -> Response[str]:
        is_ready = bool(models) and all(model.ready for model in models.values())
        return json_response({"ready": is_ready}, HTTPStatus.OK if is_ready else HTTPStatus.SERVICE_UNAVAILABLE)

    @route("GET", "/v2/models/<name>", responses=_METADATA_RESPONSES)
    def metadata(name: str) -> dict[str, Any]:
        return model_metadata(served(name), versions.versions(name))

    @route("GET", "/v2/models/<name>/versions/<version>")
    def version_metadata(name: str, version: str) -> dict[str, Any]:
        return model_metadata(served(name, version), [version])

    @route("GET", "/v2/models/<name>/ready")
    def model_ready(name: str) -> Response[str]:
        return readiness(served(name))

    @route("GET", "/v2/models/<name>/versions/<version>/ready")
    def version_ready(name: str, version: str) -> Response[str]:
        return readiness(served(name, version))

    def infer_v2(model: ServedModel, request: InferRequest) -> Response[str]:
        started = time.perf_counter()
        outputs = requested_outputs(request, model.manifest.outputs)
        inference = model.infer(v2_batch(model, request, settings.max_instances_for(model.name)))
        record_inference(model, inference.batch_size, started)
        return json_response(v2_response(model, inference, outputs, request.id), max_bytes=settings.max_response_bytes)

    @route("POST", "/v2/models/<name>/infer", responses=_INFER_RESPONSES)
    def infer(name: str, request: InferRequest) -> Response[str]:
        return infer_v2(scored(name), request)

    @route("POST", "/v2/models/<name>/versions/<version>/infer", responses=_INFER_RESPONSES)
    def version_infer(name: str, version: str, request: InferRequest) -> Response[str]:
        return infer_v2(scored(name, version), request)

    # --- KServe v1 --------------------------------------------------------------------------------------------------

    @route("GET", "/v1/models/<name>")
    def v1_model(name: str) -> dict[str, Any]:
        if name.endswith(":predict"):
            raise MethodNotAllowedError(f"GET is not allowed on /v1/models/{name}; use POST", allowed=["POST"])
        model = served(name)
        return {"name": model.name, "ready": model.ready}

    @route("POST", "/v1/models/<name>:predict", responses=_PREDICT_RESPONSES)
    def predict(name: str, request: PredictRequest) -> Response[str]:
        model = scored(name)
        started = time.perf_counter()
        instances = v1_instances(model, request, settings.max_instances_for(model.name))
        predictions = model.predict_instances(instances)
        record_inference(model, len(instances), started)
        document = {"predictions": predictions.items, "model_version": model.version}
        return json_response(document, max_bytes=settings.max_response_bytes)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> Response[str]:
        schema = app.get_openapi_json_schema(title="Serverless model serving", version="1.0.0")
        return Response(status_code=HTTPStatus.OK, content_type=content_types.APPLICATION_JSON, body=schema)

    routes.append(("GET", "/openapi.json"))
    register_error_handlers(app, logger=logger, routes=routes)

    @logger.inject_lambda_context
    @tracer.capture_lambda_handler(capture_response=False)  # responses can be large (embeddings); keep traces small
    @metrics.log_metrics(capture_cold_start_metric=True)
    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        # the request id as correlation id: a dict lookup, not a JMESPath search of the event on every request
        logger.set_correlation_id((event.get("requestContext") or {}).get("requestId"))
        response = app.resolve(event, context)
        path = event.get("rawPath") or ""
        count_error_answer(metrics, response["statusCode"], path, models, settings.service_name)
        return response

    return ApiFunction(settings=settings, models=models, app=app, lambda_handler=lambda_handler)
