"""Checks on the HTTP envelope (size, content type, instance count) that answer before the body is decoded."""

from __future__ import annotations

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from functions.runtime.errors import TooManyInstancesError
from functions.runtime.models import ServedModel


class EnvelopeError(Exception):
    """A request the API refuses for its envelope, not its content."""


class PayloadTooLargeError(EnvelopeError):
    """Body over the Lambda synchronous payload limit."""


class UnsupportedMediaTypeError(EnvelopeError):
    """A body that is not JSON (or uses the Triton binary-tensor extension)."""


class MethodNotAllowedError(EnvelopeError):
    """The path exists, the method does not."""

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.allowed = allowed


JSON_CONTENT_TYPES = ("application/json",)
BINARY_HEADER = "inference-header-content-length"


def body_size(event: APIGatewayProxyEventV2) -> int:
    """Size of the body as received (base64 bodies decode to about 3/4 of their text)."""
    body = event.body or ""
    return len(body) * 3 // 4 if event.is_base64_encoded else len(body.encode())


def check_envelope(event: APIGatewayProxyEventV2, max_body_bytes: int) -> None:
    """Raise the envelope error of a request body, if any (only bodies are checked: GETs have none)."""
    if not event.body:
        return
    size = body_size(event)
    if size > max_body_bytes:
        raise PayloadTooLargeError(f"request body is {size} bytes; the limit is {max_body_bytes} bytes")
    # The raw dict: payload 2.0 already lower-cases names, and the case-insensitive view is rebuilt on each access.
    headers = {name.lower(): value for name, value in (event.raw_event.get("headers") or {}).items()}
    if BINARY_HEADER in headers:
        raise UnsupportedMediaTypeError(
            "the binary tensor data extension is not supported; send JSON tensors (tritonclient: binary_data=False)"
        )
    content_type = headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type and media_type not in JSON_CONTENT_TYPES:
        raise UnsupportedMediaTypeError(f"content type {media_type!r} is not supported; send application/json")


def check_instance_count(model: ServedModel, count: int, max_instances: int) -> None:
    """The HTTP API's per-request limit, checked before anything is decoded; batch files chunk by their own setting."""
    if count > max_instances:
        raise TooManyInstancesError(
            f"{count} instances in one request; model {model.name} accepts at most {max_instances}"
        )
