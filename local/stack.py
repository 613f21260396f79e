"""The whole local stack wired together: moto, resources, packages, SageMaker stand-in, functions, front, poller.

The functions are built by the same factories the Lambda entry points call, from `Settings` and clients of their
own; the stack never touches the process environment or imported modules.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from catalog import Catalog, Target, load_catalog
from functions.runtime.package import MANIFEST_FILE, read_manifest
from functions.runtime.settings import Settings
from local import aws, iam
from local.clients import client
from local.config import ACCOUNT_ID, BOOTSTRAP, REGION, Credentials, LocalConfig
from local.endpoint_standin import EndpointStandIn
from local.firehose import DELIVERY_STREAM, LocalFirehose, delivery_statements
from local.http_front import ApiFront
from local.lambda_runtime import FunctionAlias, FunctionKind, FunctionSpec, LocalFunction
from local.policies import Statements, localize, synthesized_statements
from local.queue_poller import QueuePoller
from registry.local_registry import RegistryHome, RunningStack, announce, restore, withdraw
from registry.lock import read_lock
from registry.store import locked_package_dir
from stacks.routes import route_keys

API_FUNCTION_NAME = "model-serving-api-local"
BATCH_FUNCTION_NAME = "model-serving-batch-local"
READY_TIMEOUT_S = 120.0
LOCK_POLL_S = 0.5  # how often the stack looks at the version lock (a stat and a small read)

log = logging.getLogger("local")


def endpoint_name(model: str) -> str:
    """The local SageMaker endpoint name of a model placed on `sagemaker` (the cloud one is CDK-generated)."""
    return f"model-serving-{model}-local"


@dataclass(frozen=True)
class StackInfo:
    """Everything a caller needs to reach the running stack."""

    api_url: str
    aws_url: str
    sagemaker_url: str
    resources: aws.LocalResources
    model_prefixes: dict[str, str]
    sagemaker_endpoints: dict[str, str]
    admin: Credentials  # IAM is enforced: every request to moto must be signed by a known identity


@dataclass(frozen=True)
class Deployment:
    """One deploy of new versions: which, and how long from noticing the lock to the aliases shifted."""

    versions: dict[str, str]
    seconds: float


class LocalStack:
    """Start with `with LocalStack(config, packages) as stack:`; `stack.info` says where everything listens."""

    def __init__(
        self,
        config: LocalConfig,
        packages: dict[str, Path],
        catalog: Catalog | None = None,
        statements: Statements | None = None,
        registry: RegistryHome | None = None,
    ) -> None:
        """`statements` replaces the functions' synthesized IAM statements (tests that take a grant away).

        With a `registry`, the stack loads its saved state into moto, serves every registered version by path, and
        deploys what the version lock names whenever it changes (promote, rollback)."""
        self.config = config
        self.statements = statements
        self.catalog = catalog or load_catalog()
        self.packages = {name: Path(path) for name, path in packages.items()}
        unknown = set(self.packages) - set(self.catalog.models)
        if unknown:
            raise ValueError(f"packages for models the catalog does not know: {sorted(unknown)}")
        self.info: StackInfo | None = None
        self.registry = registry
        self.front: ApiFront | None = None
        self.pollers: list[QueuePoller] = []  # one event source mapping poller per concurrent worker
        self.standin: EndpointStandIn | None = None
        self.deployments: list[Deployment] = []
        self._api_alias: FunctionAlias | None = None
        self._batch_aliases: list[FunctionAlias] = []  # one execution environment per concurrent worker
        self.firehose: LocalFirehose | None = None
        self._moto: aws.MotoServer | None = None
        self._aws_url = ""
        self._bucket = self._queue_url = ""
        self._endpoints: dict[str, str] = {}
        self._api_role = self._batch_role = BOOTSTRAP
        self._models_dirs: list[tempfile.TemporaryDirectory[str]] = []
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()

    def start(self) -> StackInfo:
        platform = self.catalog.platform
        self.config.check_event_source(platform)
        self._moto = aws.MotoServer(self.config.aws_port)
        aws_url = self._aws_url = self._moto.url
        resources = aws.provision(
            aws_url,
            bucket=self.config.bucket,
            queue_name=self.config.queue_name,
            dead_letter_queue_name=self.config.dead_letter_queue_name,
            visibility_timeout_s=self.config.queue_visibility_timeout_s(platform),
            platform=platform,
        )
        if self.registry is not None:  # the saved registry, before IAM is enforced (as if it had always been there)
            restore(self.registry, client("sagemaker", aws_url))
        prefixes = aws.upload_packages(aws_url, resources.bucket, self.packages, platform)
        endpoints = {
            name: endpoint_name(name) for name in self.packages if self.catalog.model(name).target is Target.SAGEMAKER
        }
        self._endpoints = endpoints
        self.standin = EndpointStandIn(
            {endpoints[name]: self.packages[name] for name in endpoints}, self.config.sagemaker_port
        )
        self.standin.start()
        delivery_role = iam.role_credentials(
            aws_url, DELIVERY_STREAM, delivery_statements(resources.bucket, platform.capture_prefix)
        )
        admin, self._api_role, self._batch_role = self._identities(aws_url, resources, endpoints)
        self.firehose = LocalFirehose(client("s3", aws_url, delivery_role), resources.bucket, platform.capture_prefix)
        self.firehose.start()
        self._bucket = resources.bucket
        self._api_alias = FunctionAlias(self._function("api", self.packages))
        self._queue_url = resources.queue_url
        # each worker is an execution environment of its own, sharing the CPUs as concurrent sandboxes share hosts
        self._batch_aliases = [
            FunctionAlias(self._function("batch", self.packages)) for _ in range(self.config.batch_workers)
        ]
        self.front = ApiFront(self._api_alias, self.config.api_port, route_keys=route_keys(self.packages))
        self.front.start()
        self.pollers = [
            QueuePoller(
                client("sqs", aws_url, self._batch_role),  # the event source mapping polls with the function's role
                queue_url=resources.queue_url,
                queue_arn=resources.queue_arn,
                function=alias,
                batch_size=platform.queue_batch_size,
                wait_s=self.config.poll_wait_s,
            )
            for alias in self._batch_aliases
        ]
        for poller in self.pollers:
            poller.start()
        self.info = StackInfo(self.front.url, aws_url, self.standin.url, resources, prefixes, endpoints, admin)
        self.wait_ready()
        if self.registry is not None:
            announce(self.registry, RunningStack(aws_url, resources.bucket, admin, os.getpid()))
            self._watcher = threading.Thread(target=self._follow_lock, name="local-version-lock", daemon=True)
            self._watcher.start()
        return self.info

    @property
    def api_function(self) -> LocalFunction | None:
        return self._api_alias.current if self._api_alias is not None else None

    @property
    def batch_functions(self) -> list[LocalFunction]:
        return [alias.current for alias in self._batch_aliases]

    def _function(self, kind: FunctionKind, packages: dict[str, Path]) -> LocalFunction:
        """A started function version as its stack declares it: its own name, role, memory and timeout (also in its
        Settings), serving `packages`. The API function captures data, and its log stream goes through the local
        Firehose, as in AWS."""
        platform = self.catalog.platform
        assert self.standin is not None
        assert self.firehose is not None
        settings = self.function_settings(self._models_folder(packages), self._endpoints, self._bucket)
        if kind == "api":
            name, role, timeout = (
                API_FUNCTION_NAME,
                self._api_role,
                self.config.api_timeout_s or platform.api_function_timeout_s,
            )
            memory = max((self.catalog.model(n).lambda_.memory_mb for n in packages), default=2048)
        else:
            name, role, timeout = BATCH_FUNCTION_NAME, self._batch_role, self.config.batch_function_timeout_s(platform)
            memory = platform.batch_function_memory_mb
            settings = settings.model_copy(
                update={
                    "batch_queue_url": self._queue_url,
                    "batch_shard_bytes": platform.batch_shard_bytes,
                    "ort_threads": self.config.batch_worker_threads,
                }
            )
        capture = self._capture(packages) if kind == "api" else {}
        own = settings.model_copy(update={"service_name": name, "function_timeout_s": timeout, **capture})
        spec = FunctionSpec(kind, own, self._aws_url, self.standin.url, role, name, memory, timeout)
        function = LocalFunction(spec, self.firehose.log_line if kind == "api" else None)
        function.start()
        return function

    def _capture(self, packages: dict[str, Path]) -> dict[str, object]:
        """The catalog's data capture for the API function's Settings (`[models.<name>.monitoring]`)."""
        policies = {name: self.catalog.model(name).monitoring for name in packages}
        return {
            "capture_rates": {name: policy.capture_rate for name, policy in policies.items()},
            "capture_inputs": [name for name, policy in policies.items() if policy.capture_inputs],
        }

    def served_packages(self) -> dict[str, Path]:
        """What the version lock says to serve now (models the lock does not name keep their package)."""
        assert self.registry is not None
        lock = read_lock(self.registry.lock_path)
        served = {}
        for name, path in self.packages.items():
            locked = locked_package_dir(self.registry.packages_dir, name, lock)
            served[name] = locked if name in lock.models and (locked / MANIFEST_FILE).is_file() else path
        return served

    def _follow_lock(self) -> None:
        """Deploy what the lock says whenever promote or rollback changes it; a failed deploy keeps the old one."""
        while not self._stopping.wait(LOCK_POLL_S):
            try:
                served = self.served_packages()
                if served != self.packages:
                    self.deploy(served)
            except Exception:  # a half-written lock, a package that fails to load: keep serving, say why
                log.exception("deploying the locked versions failed; the previous versions keep serving")

    def deploy(self, packages: dict[str, Path]) -> Deployment:
        """A new function version per function, started beside the serving one, then each alias shifts to it (as
        CodeDeploy shifts a Lambda alias); endpoint models update their endpoint first, blue/green."""
        started = time.monotonic()
        assert self._api_alias is not None
        assert self.standin is not None
        changed = {name: path for name, path in packages.items() if self.packages.get(name) != path}
        for name, path in changed.items():
            if name in self._endpoints:
                self.standin.deploy(self._endpoints[name], path)
        self._api_alias.shift(self._function("api", packages))  # each alias moves as soon as its version is up
        for alias in self._batch_aliases:
            alias.shift(self._function("batch", packages))
        self.packages = dict(packages)
        deployment = Deployment(
            versions={name: read_manifest(path).version for name, path in changed.items()},
            seconds=time.monotonic() - started,
        )
        self.deployments.append(deployment)
        for name, version in deployment.versions.items():
            log.warning("now serving %s %s (deployed in %.1f s)", name, version, deployment.seconds)
        return deployment

    def _identities(
        self, aws_url: str, resources: aws.LocalResources, endpoints: dict[str, str]
    ) -> tuple[Credentials, Credentials, Credentials]:
        """The administrator and each function's role (with its synthesized statements); then moto enforces IAM."""
        statements = self.statements or synthesized_statements(self.packages)
        values = {
            "bucket": resources.bucket,
            "queue_arn": resources.queue_arn,
            "queue_url": resources.queue_url,
            "endpoint_arn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:endpoint/*",
            "log_group_arn": f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:/aws/lambda/*",
        }
        admin = iam.create_admin(aws_url)
        api_role = iam.role_credentials(aws_url, API_FUNCTION_NAME, localize(statements["api"], values))
        batch_role = iam.role_credentials(aws_url, BATCH_FUNCTION_NAME, localize(statements["batch"], values))
        iam.enforce(aws_url)
        return admin, api_role, batch_role

    def function_settings(self, models_dir: str, endpoints: dict[str, str], bucket: str) -> Settings:
        """What the stacks give each function, with this machine's package folder, bucket and stand-in endpoints."""
        platform = self.catalog.platform
        return Settings(
            models_dir=Path(models_dir),
            versions_dir=self.registry.packages_dir if self.registry is not None else None,
            sagemaker_endpoints=endpoints,
            sagemaker_max_batch={name: self.catalog.model(name).sagemaker.max_batch_size for name in endpoints},
            max_instances={name: self.catalog.model(name).max_instances for name in self.packages},
            batch_bucket=bucket,
            batch_input_prefix=platform.batch_input_prefix,
            batch_output_prefix=platform.batch_output_prefix,
            batch_rows_per_inference=platform.batch_rows_per_inference,
            metrics_namespace="ModelServingLocal",
            metrics_enabled=False,  # a terminal, not CloudWatch: EMF documents go to the debug log
            log_level=self.config.log_level,
        )

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until the API answers /v2/health/ready with 200, or raise after `timeout_s`."""
        assert self.front is not None
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.front.url}/v2/health/ready", timeout=10) as response:
                    if response.status == 200:
                        return
            except OSError as error:
                last = error
            time.sleep(0.2)
        raise TimeoutError(f"the local API was not ready within {timeout_s:.0f} s (last error: {last})")

    def stop(self) -> None:
        """Stop in reverse order; safe to call twice and after a failed start."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(30)
            self._watcher = None
        if self.registry is not None:
            withdraw(self.registry)
        for poller in self.pollers:
            poller.stop()
        self.pollers = []
        if self.front is not None:
            self.front.stop()
            self.front = None
        for alias in (self._api_alias, *self._batch_aliases):
            if alias is not None:
                alias.stop()
        self._batch_aliases = []
        if self.firehose is not None:
            self.firehose.stop()  # delivers what it still buffers, before moto goes
            self.firehose = None
        if self.standin is not None:
            self.standin.stop()
            self.standin = None
        if self._moto is not None:
            self._moto.stop()  # its process holds all the stack's AWS state, so nothing is left behind
            self._moto = None
        for folder in self._models_dirs:
            folder.cleanup()
        self._models_dirs = []

    def _models_folder(self, packages: dict[str, Path]) -> str:
        """MODELS_DIR holds one package folder per model: symlinks, so packages may live anywhere (tests)."""
        folder = tempfile.TemporaryDirectory(prefix="local-models-")
        self._models_dirs.append(folder)
        for name, path in packages.items():
            (Path(folder.name) / name).symlink_to(path.resolve(), target_is_directory=True)
        return folder.name
