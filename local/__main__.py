"""python -m local serve | demo [--once]: the whole serving stack on this machine, in the foreground."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from catalog import ROOT, load_catalog
from local.config import LOCAL_PACKAGES_DIR, LocalConfig
from local.stack import LocalStack, StackInfo
from registry.local_registry import RegistryHome, register_package
from registry.lock import read_lock
from registry.store import PackageStore, approved_package_dir

log = logging.getLogger("local")


def find_packages(build_missing: bool) -> tuple[dict[str, Path], RegistryHome | None]:
    """Every catalog model's approved package (build/models/<name>/<version>/ as models.lock.json names it), training
    missing ones first; with LOCAL_PACKAGES_DIR, the packages in <dir>/<name>/ and no registry."""
    catalog = load_catalog()
    override = os.environ.get(LOCAL_PACKAGES_DIR)
    if override:
        packages = {name: Path(override) / name for name in catalog.models}
        home = None
    else:
        home = RegistryHome()
        register_unlocked(home)
        packages = {name: approved_package_dir(name, home.packages_dir, home.lock_path) for name in catalog.models}
    missing = [name for name, path in packages.items() if not (path / "manifest.json").is_file()]
    if missing and build_missing and home is not None:
        command = [sys.executable, "-m", "training.submit", "--profile", "demo"]
        for name in missing:
            command += ["--model", name]
        log.info("no package yet for %s: training (%s)", ", ".join(missing), " ".join(command[1:]))
        # A child process: the serving side never imports torch.
        subprocess.run(command, cwd=ROOT, check=False, timeout=3 * 3600)
        packages = {name: approved_package_dir(name, home.packages_dir, home.lock_path) for name in catalog.models}
    absent = [name for name, path in packages.items() if not (path / "manifest.json").is_file()]
    if absent:
        raise SystemExit(f"no approved package for {', '.join(absent)}; run `make models`")
    return packages, home


def register_unlocked(home: RegistryHome) -> None:
    """Packages from before the registry (build/models/<name>/ holding one package) become registered versions."""
    store = PackageStore(home.packages_dir)
    store.adopt_unversioned()
    lock = read_lock(home.lock_path)
    unlocked = [name for name in load_catalog().models if name not in lock.models and store.versions(name)]
    for name in unlocked:
        for version in store.versions(name):
            register_package(store.version_dir(name, version), home)


def usage_text(info: StackInfo) -> str:
    """What a person types next: curl for v2/v1/metadata, aws s3 cp and boto3 for batch."""
    api, aws_url, bucket, admin = info.api_url, info.aws_url, info.resources.bucket, info.admin
    prefix = load_catalog().platform.batch_input_prefix
    output = load_catalog().platform.batch_output_prefix
    lines = [
        "",
        f"  HTTP API (API Gateway 2.0 → functions.api.handler)   {api}",
        f"  S3 + SQS (moto server)                              {aws_url}   bucket: {bucket}",
        f"  batch queue / dead-letter queue                     {info.resources.queue_url} / "
        f"{info.resources.dead_letter_queue_url}",
        f"  SageMaker runtime stand-in                          {info.sagemaker_url}   endpoints: "
        f"{', '.join(f'{m} → {e}' for m, e in info.sagemaker_endpoints.items()) or 'none'}",
        "",
        "  Try:",
        f"    curl -s {api}/v2/health/ready -o /dev/null -w '%{{http_code}}\\n'",
        f"    curl -s {api}/v2/models/sentiment",
        f"    curl -s {api}/v2/models/sentiment/infer -H 'content-type: application/json' \\",
        """      -d '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["great day"]}]}'""",
        f"    curl -s '{api}/v1/models/sentiment:predict' -H 'content-type: application/json' \\",
        """      -d '{"instances": ["I love this", "this is awful"]}'""",
        f"    curl -s '{api}/v1/models/embeddings:predict' -H 'content-type: application/json' "
        """-d '{"instances": ["hello world"]}'""",
        "",
        "  Batch (any file under the input prefix is scored; results land under the output prefix):",
        """    printf '{"id": "a", "text": "best launch ever"}\\n{"id": "b", "text": "meh"}\\n' > tweets.jsonl""",
        "  (moto enforces IAM: sign as the stack's administrator, created at start)",
        f"    export AWS_ACCESS_KEY_ID={admin.access_key_id} AWS_SECRET_ACCESS_KEY={admin.secret_access_key}"
        " AWS_DEFAULT_REGION=us-east-1",
        f"    aws s3 cp tweets.jsonl s3://{bucket}/{prefix}sentiment/tweets.jsonl --endpoint-url {aws_url}",
        f"    aws s3 ls s3://{bucket}/{output}sentiment/ --endpoint-url {aws_url}",
        f"    aws s3 cp s3://{bucket}/{output}sentiment/tweets.jsonl.summary.json - --endpoint-url {aws_url}",
        "    # the summary's outputs.results and outputs.errors name this run's two row files",
        "",
        "  boto3:",
        f"    s3 = boto3.client('s3', endpoint_url='{aws_url}', region_name='us-east-1',",
        f"                      aws_access_key_id='{admin.access_key_id}',"
        f" aws_secret_access_key='{admin.secret_access_key}')",
        f"    s3.upload_file('tweets.jsonl', '{bucket}', '{prefix}sentiment/tweets.jsonl')",
        f"    s3.list_objects_v2(Bucket='{bucket}', Prefix='{output}sentiment/')['Contents']",
        "",
        "  Versions (the registry in this stack's moto; promote and rollback switch what /infer serves):",
        "    .venv/bin/python -m registry versions sentiment",
        f"    curl -s {api}/v2/models/sentiment/versions/<version>/infer ...   # any registered version",
        "",
        "  Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def stop_on_signal(stop: threading.Event) -> None:
    """SIGINT or SIGTERM sets `stop`; installed before the line that tells the user to press Ctrl-C."""

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


def wait_for_signal(stop: threading.Event) -> None:
    """Serve until stopped; the wait is in slices so that signals are handled promptly."""
    while not stop.wait(0.5):
        pass


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve every model until Ctrl-C")
    demo = commands.add_parser("demo", help="serve, send real requests and a batch file, print the answers")
    demo.add_argument("--once", action="store_true", help="exit after the demo traffic (also DEMO_ONCE=1)")
    for command in (commands.choices["serve"], demo):
        command.add_argument("--no-build", action="store_true", help="fail instead of training missing packages")
        command.add_argument(
            "-v", "--verbose", action="store_true", help="debug logs: the functions' JSON logs and EMF metrics"
        )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    level = logging.DEBUG if arguments.verbose or os.environ.get("LOG_LEVEL") == "DEBUG" else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if arguments.command == "demo" and level > logging.DEBUG:
        for chatty in ("local.http", "local.poller"):  # the demo prints each answer itself
            logging.getLogger(chatty).setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)  # "found credentials/endpoint" lines on every client
    packages, registry = find_packages(build_missing=not arguments.no_build)
    config = LocalConfig.from_env()
    if arguments.verbose:
        config = replace(config, log_level="DEBUG")
    elif config.log_level is None and arguments.command == "demo":
        config = replace(config, log_level="WARNING")  # the demo shows answers, not the functions' JSON logs
    stop = threading.Event()
    with LocalStack(config, packages, registry=registry) as stack:
        assert stack.info is not None
        if arguments.command == "serve":
            stop_on_signal(stop)
        print(usage_text(stack.info), flush=True)
        if arguments.command == "demo":
            from local.demo import run_demo

            ok = run_demo(stack)
            if arguments.once or os.environ.get("DEMO_ONCE") == "1":
                return 0 if ok else 1
            stop_on_signal(stop)
            print("\nThe demo traffic is done; the stack keeps serving until Ctrl-C.", flush=True)
        wait_for_signal(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
