"""Versions by path in the API function: listed from the versions folder, loaded on demand, at most N held."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.runtime.errors import UnknownModelError
from functions.runtime.models import ModelVersions, load_models
from functions.runtime.settings import Settings
from registry.store import PackageStore
from tests.registry_versions import add_version
from tests.unit.handmade_packages import build_handmade_package

VERSIONS = ["20261201T000001Z", "20261201T000002Z", "20261201T000003Z", "20261201T000004Z"]


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> ModelVersions:
    root = tmp_path_factory.mktemp("versions")
    base = build_handmade_package("digits", root / "base")
    store = PackageStore(root / "models")
    for version in VERSIONS:
        add_version(store, base, version, {"test_accuracy": 0.9})
    served = root / "served"
    served.mkdir()
    (served / "digits").symlink_to(store.version_dir("digits", VERSIONS[0]), target_is_directory=True)
    settings = Settings(models_dir=served, versions_dir=store.root, version_cache_size=2, ort_threads=1)
    return ModelVersions(load_models(settings), settings)


def test_every_version_on_disk_is_listed(versions: ModelVersions) -> None:
    assert versions.versions("digits") == VERSIONS


def test_a_version_is_loaded_on_demand_and_at_most_two_stay_loaded(versions: ModelVersions) -> None:
    assert versions.get("digits").version == VERSIONS[0]
    loaded = [versions.get("digits", version) for version in VERSIONS[1:]]
    assert [model.version for model in loaded] == VERSIONS[1:]
    assert [key[1] for key in versions._loaded] == VERSIONS[2:]  # the least recently used went first
    assert versions.get("digits", VERSIONS[3]) is loaded[2]  # held: not loaded again


def test_an_unknown_or_traversing_version_is_unknown(versions: ModelVersions) -> None:
    for version in ("19990101T000000Z", "../digits", ".."):
        with pytest.raises(UnknownModelError, match="has no version"):
            versions.get("digits", version)


def test_without_a_versions_folder_only_the_served_version_exists(tmp_path: Path) -> None:
    build_handmade_package("digits", tmp_path / "digits")
    settings = Settings(models_dir=tmp_path, ort_threads=1)
    only = ModelVersions(load_models(settings), settings)
    assert only.versions("digits") == [only.get("digits").version]
