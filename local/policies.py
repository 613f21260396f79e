"""The IAM statements CDK synthesizes for each function, resolved to the local stack's resources.

The local stack runs its API and batch functions under roles holding exactly these statements, so a grant missing
from a construct fails here as it would in AWS. The app is synthesized in a child process (jsii is slow to start and
has no place in a serving process) and the result is cached, keyed by the code and settings that decide it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from catalog import ROOT

CACHE_DIR = ROOT / "build" / "local"
# What decides the policies: the stacks' code, the catalog and the CDK context (packages only need to pass the gate).
POLICY_SOURCES = ("stacks", "catalog.py", "models.toml", "cdk.json", "local/policies.py")
UNRESOLVED = "arn:aws:local:::unresolved"
# The CloudFormation types (and attribute) a function's statements reference, and the symbol each becomes until
# `localize` puts in this stack's value.
SYMBOLS: dict[tuple[str, str], str] = {
    ("AWS::S3::Bucket", "Arn"): "arn:aws:s3:::{bucket}",
    ("AWS::S3::Bucket", "Ref"): "{bucket}",
    ("AWS::SQS::Queue", "Arn"): "{queue_arn}",
    ("AWS::SQS::Queue", "Ref"): "{queue_url}",
    ("AWS::SageMaker::Endpoint", "Ref"): "{endpoint_arn}",
    ("AWS::Logs::LogGroup", "Arn"): "{log_group_arn}",
}

Statements = dict[str, list[dict[str, Any]]]


def cache_key(models: Iterable[str]) -> str:
    digest = hashlib.sha256(",".join(sorted(models)).encode())
    for source in POLICY_SOURCES:
        path = ROOT / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(ROOT).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def synthesized_statements(packages: Mapping[str, Path]) -> Statements:
    """{"api": [...], "batch": [...]}: the statements of every served model's functions, symbols where ARNs go."""
    cached = CACHE_DIR / f"policies-{cache_key(packages)}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    arguments = json.dumps({name: str(Path(path).resolve()) for name, path in packages.items()})
    environment = {**os.environ, "JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION": "1"}
    environment["JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "local.policies", arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"synthesizing the stacks for their IAM policies failed:\n{done.stderr[-3000:]}")
    statements: Statements = json.loads(done.stdout.strip().splitlines()[-1])
    partial = cached.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps(statements, indent=1))
    partial.replace(cached)  # atomic: two stacks starting at once never read half a file
    return statements


def localize(statements: list[dict[str, Any]], values: Mapping[str, str]) -> list[dict[str, Any]]:
    """Symbols replaced by this stack's ARNs and names; duplicates dropped (one local function serves every model)."""
    text = json.dumps(statements)
    for symbol, value in values.items():
        text = text.replace("{" + symbol + "}", value)
    unique: list[dict[str, Any]] = []
    for statement in json.loads(text):
        if statement not in unique:
            unique.append(statement)
    return unique


def _symbol(reference: str, resource_type: str) -> str:
    """The symbol for a `LogicalId` (Ref) or `LogicalId.Attribute` reference; UNRESOLVED matches nothing."""
    attribute = reference.split(".", 1)[1] if "." in reference else "Ref"
    return SYMBOLS.get((resource_type, attribute), UNRESOLVED)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _synthesize(packages: Mapping[str, Path]) -> Statements:
    """Build the app exactly as `cdk synth` does, over a build context that links to these packages."""
    from catalog import load_catalog
    from local.config import ACCOUNT_ID, REGION
    from registry.lock import lock_for
    from stacks.config import AppConfig
    from stacks.function_policies import PSEUDO_PARAMETERS, resolve_statements, synthesize_function_policies

    pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT_ID}
    catalog = load_catalog()  # only the models this stack serves: the deploy gate wants a package for each

    with tempfile.TemporaryDirectory(prefix="local-policies-") as scratch:
        context = Path(scratch) / "context"
        (context / "build" / "models").mkdir(parents=True)
        (context / "functions").symlink_to(ROOT / "functions", target_is_directory=True)
        (context / ".dockerignore").symlink_to(ROOT / ".dockerignore")
        for (
            name,
            path,
        ) in packages.items():  # hard links where possible: the gate reads them, the image build never runs
            shutil.copytree(path, context / "build" / "models" / name, copy_function=_link_or_copy)
        config = AppConfig(
            catalog=catalog.model_copy(update={"models": {name: catalog.models[name] for name in packages}}),
            stage="local",
            account=ACCOUNT_ID,
            region=REGION,
            source_root=context,
            packages_dir=context / "build" / "models",
            lock=lock_for(packages),  # the packages this stack serves are its approved versions
        )
        statements: Statements = {"api": [], "batch": []}
        for (kind, _), policy in synthesize_function_policies(config).items():
            symbols = {reference: _symbol(reference, kind_of) for reference, kind_of in policy.references.items()}
            statements[kind] += resolve_statements(policy.statements, symbols, {**PSEUDO_PARAMETERS, **pseudo})
        return statements


if __name__ == "__main__":
    print(json.dumps(_synthesize({name: Path(path) for name, path in json.loads(sys.argv[1]).items()})))
