"""Typed serving errors: the runtime raises them, each handler maps them to its own answer in one place."""

from __future__ import annotations

from pydantic import ValidationError


class ServingError(Exception):
    """Base of every error the runtime raises on purpose; the message is safe to show a caller."""


class InputError(ServingError):
    """The caller's input cannot be scored (wrong name, type, shape, empty): a client error."""


class UnknownModelError(ServingError):
    """No model with that name (or version) is served by this function."""


class TooManyInstancesError(InputError):
    """More instances in one request than the model's max_instances allows."""


class OutputError(ServingError):
    """The model answered this input with values JSON cannot carry (NaN, infinity): a server-side error of this
    input alone (a batch row fails by itself; the backend is fine and nothing is retried)."""


class BackendError(ServingError):
    """The inference backend (ONNX Runtime or a SageMaker endpoint) failed: a server-side error."""


class BackendTimeoutError(BackendError):
    """The SageMaker endpoint did not answer within the client's timeouts (every attempt): a gateway timeout."""


def describe_validation_error(error: ValidationError) -> str:
    """Pydantic's problems as one line a person can act on: which field, what is wrong (no Python internals)."""
    return "; ".join(
        f"field {'.'.join(str(part) for part in problem['loc']) or '(root)'}: {problem['msg']}"
        for problem in error.errors()
    )
