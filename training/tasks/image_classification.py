"""Image classification: a small CNN trained from scratch on 8x8 digits.

The graph takes pixels already divided by `pixel_scale` (the runtime scales, as the manifest says), so the same
graph would serve any source whose images share the scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from functions.runtime.package import Preprocessing, TensorSpec
from training.datasets import read_images
from training.export_spec import ExportSpec, TaskManifest
from training.small_cnn import SmallCNN
from training.tasks.base import Batch, TrainingTask, classifier_outputs

IMAGE_SHAPE = (8, 8)
PIXEL_SCALE = 16.0
TOLERANCE = 1e-4
Example = tuple[np.ndarray, int]


class ImageClassification(TrainingTask):
    def read_split(self, split: str) -> list[Example]:
        images, labels = read_images(self.channel(split))
        scaled = (images / PIXEL_SCALE).astype(np.float32)
        return list(zip(scaled, labels.tolist(), strict=True))

    def build_model(self) -> nn.Module:
        return SmallCNN(len(self.labels))

    def collate(self, examples: Sequence[Example]) -> Batch:
        pixels = np.stack([image for image, _ in examples])[:, None, :, :]
        return {
            "pixels": torch.from_numpy(pixels),
            "labels": torch.tensor([label for _, label in examples], dtype=torch.long),
        }

    def _feeds(self, examples: Sequence[Example]) -> dict[str, np.ndarray]:
        return {"pixels": np.stack([image for image, _ in examples])[:, None, :, :]}

    def export_spec(self, model: nn.Module) -> ExportSpec:
        train, validation, test = self.train_examples(), self.eval_examples("validation"), self.eval_examples("test")
        return ExportSpec(
            module=model.eval(),
            input_names=["pixels"],
            output_names=["logits"],
            dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
            parity_cases=[("batch-1", self._feeds(validation[:1])), ("batch-all", self._feeds(validation))],
            tolerance=TOLERANCE,
            validation_feeds=[self._feeds(validation)],
            validation_labels=np.array([label for _, label in validation], dtype=np.int64),
            test_feeds=[self._feeds(test)],
            test_labels=np.array([label for _, label in test], dtype=np.int64),
            manifest=TaskManifest(
                task=self.entry.task,
                inputs=[TensorSpec(name="pixels", datatype="FP32", shape=[-1, *IMAGE_SHAPE])],
                outputs=classifier_outputs(len(self.labels)),
                labels=list(self.labels),
                preprocessing=Preprocessing(image_shape=list(IMAGE_SHAPE), pixel_scale=PIXEL_SCALE),
            ),
            reference_inputs=[image * PIXEL_SCALE for image, _ in [*train, *validation]],
            reference_data=f"train + validation ({len(train)} + {len(validation)} images)",
        )


TASK = ImageClassification
