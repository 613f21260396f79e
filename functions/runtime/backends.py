"""Two ways to run a graph behind one interface: ONNX Runtime in-process, or a SageMaker (Triton) endpoint."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from botocore.exceptions import BotoCoreError, ClientError

from functions.runtime.errors import BackendError
from functions.runtime.tensors import decode_output, encode_request


class InferenceBackend(Protocol):
    """Graph feeds in, graph outputs out; pre/post-processing never lives here."""

    name: str

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OnnxBackend:
    """The in-process session (Lambda): feeds go to session.run as they are, no copies."""

    name = "onnxruntime"

    def __init__(self, session: ort.InferenceSession, output_names: list[str]) -> None:
        self.session = session
        self.output_names = output_names

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self.session.run(self.output_names, feeds)  # type: ignore[arg-type]
        except Exception as error:  # onnxruntime raises its own untyped errors (Fail, InvalidArgument, ...)
            raise BackendError(f"onnxruntime failed: {error}") from error
        return dict(zip(self.output_names, results, strict=True))


class SageMakerBackend:
    """A Triton endpoint on SageMaker, spoken to in Open Inference Protocol v2 JSON through InvokeEndpoint."""

    name = "sagemaker"

    def __init__(self, client: Any, endpoint_name: str, output_names: list[str]) -> None:
        self.client = client
        self.endpoint_name = endpoint_name
        self.output_names = output_names

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            response = self.client.invoke_endpoint(
                EndpointName=self.endpoint_name,
                ContentType="application/json",
                Accept="application/json",
                Body=encode_request(feeds, self.output_names),
            )
            document = json.loads(response["Body"].read())
        except (ClientError, BotoCoreError) as error:
            raise BackendError(f"endpoint {self.endpoint_name} failed: {error}") from error
        except json.JSONDecodeError as error:
            raise BackendError(f"endpoint {self.endpoint_name} returned non-JSON: {error}") from error
        try:
            tensors = {tensor["name"]: decode_output(tensor) for tensor in document["outputs"]}
            return {name: tensors[name] for name in self.output_names}
        except (KeyError, TypeError, ValueError) as error:
            raise BackendError(f"endpoint {self.endpoint_name} returned no v2 output {error}") from error
