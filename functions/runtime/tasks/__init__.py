"""Per-task pre- and post-processing, picked by the manifest's `task` through the task registry."""

from __future__ import annotations

import importlib

from functions.runtime.package import ModelPackage
from functions.runtime.task_registry import TASKS
from functions.runtime.tasks.base import Prepared, TaskProcessor


def processor_for(package: ModelPackage) -> TaskProcessor:
    """The processor the registry names for a package's task (the manifest model already rejects unknown tasks)."""
    module_name, _, class_name = TASKS[package.manifest.task].processor.partition(":")
    processor_class: type[TaskProcessor] = getattr(importlib.import_module(module_name), class_name)
    return processor_class(package)


__all__ = ["Prepared", "TaskProcessor", "processor_for"]
