"""Serving code never imports torch or transformers: the handlers import and predict with both blocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = textwrap.dedent(
    """
    import sys

    class BlockHeavyFrameworks:
        blocked = ("torch", "transformers")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"serving must not import {name}")
            return None

    sys.meta_path.insert(0, BlockHeavyFrameworks())
    """
)

PROBE = textwrap.dedent(
    """
    import sys
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker is not active")
    import functions.api.handler as api
    import functions.batch.handler as batch
    models = api.function.models
    outputs = {name: model.predict(model.processor.example_batch()) for name, model in models.items()}
    assert set(batch.function.models) == set(models)
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "transformers"))
    assert not loaded, loaded
    print(sorted(outputs))
    """
)


def test_handlers_import_and_predict_without_torch(serving_packages: dict[str, Path], tmp_path: Path) -> None:
    # given a sitecustomize that makes `import torch` / `import transformers` fail
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    for name, path in serving_packages.items():
        (models_dir / name).symlink_to(path, target_is_directory=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "MODELS_DIR": str(models_dir),
        "ORT_THREADS": "1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    # when
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    # then
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"')) == sorted(serving_packages)
