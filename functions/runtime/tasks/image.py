"""Image classification on 8x8 digits: the runtime scales raw pixels by pixel_scale, the graph never does."""

from __future__ import annotations

import math
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
        self.pixel_scale = float(preprocessing.pixel_scale)
        self.scale = np.float32(1.0 / preprocessing.pixel_scale)

    def check_batch(self, value: Any) -> np.ndarray:
        """Pixels [n, H, W] as float32 (the codec decoded the declared shape), each within 0..pixel_scale.

        The range is the model's input domain; far outside it (say 3e38) the graph overflows to inf/NaN scores, so
        refusing it here is what keeps every answer finite. NaN fails both comparisons, so it is refused too.
        """
        pixels = np.asarray(value, dtype=np.float32)
        low, high = float(pixels.min()), float(pixels.max())
        if not (low >= 0.0 and high <= self.pixel_scale):
            raise InputError(
                f"input {self.input_name!r}: pixel values must be numbers from 0 to {self.pixel_scale:g} "
                f"(the model's pixel_scale); got values from {low:g} to {high:g}"
            )
        return pixels

    def check_instance(self, value: Any) -> np.ndarray:
        value = self.unwrap(value)
        if isinstance(value, bool | str | int | float) or value is None:
            raise InputError(f"{self.input_name!r} must be a {self.image_shape} array or {self.pixel_count} numbers")
        try:
            with np.errstate(over="ignore"):  # numbers beyond FP32 become inf, which the range check refuses
                pixels = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError, OverflowError):
            raise InputError(
                f"{self.input_name!r}: expected numbers in a [{', '.join(map(str, self.image_shape))}] array"
            ) from None
        if pixels.shape == (self.pixel_count,):
            pixels = pixels.reshape(self.image_shape)
        if pixels.shape != self.image_shape:
            raise InputError(
                f"{self.input_name!r}: expected shape [{', '.join(map(str, self.image_shape))}] "
                f"(or [{self.pixel_count}]), got {list(pixels.shape)}"
            )
        return self.check_batch(pixels)

    def stack(self, instances: list[Any]) -> np.ndarray:
        return np.stack(instances)

    def prepare(self, batch: np.ndarray) -> Prepared:
        feed = (batch * self.scale).reshape((batch.shape[0], 1, *self.image_shape))
        return Prepared(feeds={self.graph_input_names[0]: feed}, batch_size=batch.shape[0])

    def input_features(self, prepared: Prepared) -> dict[str, np.ndarray]:
        """Mean and spread of each image's pixels, in the caller's units (0..pixel_scale)."""
        pixels = prepared.feeds[self.graph_input_names[0]].reshape(prepared.batch_size, -1) * self.pixel_scale
        return {"pixel_mean": pixels.mean(axis=1), "pixel_std": pixels.std(axis=1)}

    def example_batch(self) -> np.ndarray:
        return np.zeros((2, *self.image_shape), dtype=np.float32)
