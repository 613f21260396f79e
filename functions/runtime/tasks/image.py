"""Image classification on 8x8 digits: the runtime scales raw pixels by pixel_scale, the graph never does."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from functions.runtime.errors import InputError
from functions.runtime.package import ModelPackage
from functions.runtime.tasks.base import Classifier, Prepared


class ImageClassification(Classifier):
    """Pixels [n, H, W] (or [n, H*W]) in 0..pixel_scale -> graph [n, 1, H, W] in 0..1."""

    def __init__(self, package: ModelPackage) -> None:
        super().__init__(package)
        preprocessing = package.manifest.preprocessing
        assert preprocessing.image_shape is not None
        assert preprocessing.pixel_scale is not None
        self.image_shape = tuple(preprocessing.image_shape)
        self.pixel_count = math.prod(self.image_shape)
        self.scale = np.float32(1.0 / preprocessing.pixel_scale)

    def _as_images(self, value: Any) -> np.ndarray:
        try:
            pixels = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError(
                f"input {self.input_name!r}: expected numbers in a [n, {', '.join(map(str, self.image_shape))}] array"
            ) from None
        if pixels.ndim == 2 and pixels.shape[1] == self.pixel_count:
            pixels = pixels.reshape((pixels.shape[0], *self.image_shape))
        if pixels.shape[1:] != self.image_shape or pixels.ndim != 1 + len(self.image_shape):
            raise InputError(
                f"input {self.input_name!r}: expected shape [n, {', '.join(map(str, self.image_shape))}] "
                f"(or [n, {self.pixel_count}]), got {list(pixels.shape)}"
            )
        if pixels.shape[0] == 0:
            raise InputError(f"input {self.input_name!r}: no instances")
        if not np.isfinite(pixels).all():
            raise InputError(f"input {self.input_name!r}: pixel values must be finite numbers")
        return pixels

    def prepare(self, inputs: Mapping[str, Any]) -> Prepared:
        pixels = self._as_images(self.batch_of(inputs))
        feed = (pixels * self.scale).reshape((pixels.shape[0], 1, *self.image_shape))
        return Prepared(feeds={self.graph_input_names[0]: feed}, batch_size=pixels.shape[0])

    def check_instance(self, value: Any) -> np.ndarray:
        if isinstance(value, dict) and set(value) == {self.input_name}:
            value = value[self.input_name]
        if isinstance(value, bool | str | int | float) or value is None:
            raise InputError(f"{self.input_name!r} must be a {self.image_shape} array or {self.pixel_count} numbers")
        return self._as_images([value])[0]

    def stack(self, instances: list[Any]) -> dict[str, Any]:
        return {self.input_name: np.stack(instances)}

    def example_inputs(self) -> dict[str, Any]:
        return {self.input_name: np.zeros((2, *self.image_shape), dtype=np.float32)}
