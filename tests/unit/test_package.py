"""A package is served only if parity passed and every file matches its manifest checksum."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from functions.runtime.package import PackageError, load_package


@pytest.fixture
def package(serving_packages: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of a real package that a test may tamper with."""
    return Path(shutil.copytree(serving_packages["sentiment"], tmp_path / "sentiment"))


def rewrite_manifest(path: Path, **changes: object) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_a_verified_package_loads(package: Path) -> None:
    loaded = load_package(package)
    assert loaded.name == "sentiment"
    assert loaded.manifest.task == "text-classification"
    assert loaded.graph_path.is_file()
    assert loaded.tokenizer_path.is_file()


def test_one_tampered_byte_is_refused(package: Path) -> None:
    # given the model file with one byte flipped (same size)
    graph = package / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    # then
    with pytest.raises(PackageError, match=r"sha256 mismatch for model\.onnx"):
        load_package(package)


def test_a_tampered_tokenizer_is_refused(package: Path) -> None:
    tokenizer = package / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace("[PAD]", "[PAX]", 1))
    with pytest.raises(PackageError, match=r"tokenizer\.json"):
        load_package(package)


def test_failed_parity_is_refused(package: Path) -> None:
    manifest = json.loads((package / "manifest.json").read_text())
    rewrite_manifest(package, parity={**manifest["parity"], "passed": False})
    with pytest.raises(PackageError, match="parity did not pass"):
        load_package(package)


def test_missing_file_is_refused(package: Path) -> None:
    (package / "tokenizer.json").unlink()
    with pytest.raises(PackageError, match="missing"):
        load_package(package)


def test_graph_without_checksum_is_refused(package: Path) -> None:
    manifest = json.loads((package / "manifest.json").read_text())
    files = {name: record for name, record in manifest["files"].items() if name != "model.onnx"}
    rewrite_manifest(package, files=files)
    with pytest.raises(PackageError, match=r"no checksum for model\.onnx"):
        load_package(package)


def test_file_outside_the_package_is_refused(package: Path) -> None:
    manifest = json.loads((package / "manifest.json").read_text())
    rewrite_manifest(package, files={**manifest["files"], "../elsewhere": manifest["files"]["model.onnx"]})
    with pytest.raises(PackageError, match="outside the package"):
        load_package(package)


def test_invalid_manifest_names_the_field(package: Path) -> None:
    rewrite_manifest(package, task="translation")
    with pytest.raises(PackageError, match="task"):
        load_package(package)


def test_no_manifest(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"no manifest\.json"):
        load_package(tmp_path)


def test_an_endpoint_front_loads_without_the_graph_but_still_checks_what_it_has(package: Path) -> None:
    # given the package as a GPU-placed model's function image holds it: no graph
    (package / "model.onnx").unlink()

    # then a full load refuses it, a load for the SageMaker backend accepts it
    with pytest.raises(PackageError, match="missing"):
        load_package(package)
    assert load_package(package, with_graph=False).manifest.name == "sentiment"
    # and the files it does carry are still verified
    (package / "tokenizer.json").write_text("{}")
    with pytest.raises(PackageError, match=r"tokenizer\.json"):
        load_package(package, with_graph=False)
