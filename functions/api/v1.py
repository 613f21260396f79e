"""KServe v1 (TF-Serving style) `:predict` documents <-> checked instances and predictions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from functions.api.envelope import check_instance_count
from functions.runtime.errors import InputError
from functions.runtime.models import ServedModel


class PredictRequest(BaseModel):
    """KServe v1 / TF-Serving `:predict` body."""

    instances: list[Any] = Field(min_length=1)


class PredictResponse(BaseModel):
    """KServe v1 answer: per instance {label, score, scores} for classifiers, a vector for embeddings."""

    predictions: list[Any]
    model_version: str | None = None  # the version that answered (as v2's model_version)


def v1_instances(model: ServedModel, request: PredictRequest, max_instances: int) -> list[Any]:
    """Instances checked one by one, so the error names the first bad instance."""
    check_instance_count(model, len(request.instances), max_instances)
    instances = []
    for index, instance in enumerate(request.instances):
        try:
            instances.append(model.check_instance(instance))
        except InputError as error:
            raise InputError(f"instance {index}: {error}") from None
    return instances
