"""The whole local stack wired together: moto, resources, packages, SageMaker stand-in, functions, front, poller.

The functions are built by the same factories the Lambda entry points call, from `Settings` and clients of their
own; the stack never touches the process environment or imported modules.
"""

from __future__ import annotations

import logging
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from catalog import Catalog, Target, load_catalog
from functions.runtime.settings import Settings
from local import aws, iam
from local.clients import client
from local.config import ACCOUNT_ID, REGION, Credentials, LocalConfig
from local.endpoint_standin import EndpointStandIn
from local.http_front import ApiFront
from local.lambda_runtime import FunctionKind, FunctionSpec, LocalFunction
from local.policies import Statements, localize, synthesized_statements
from local.queue_poller import QueuePoller
from stacks.routes import route_keys

API_FUNCTION_NAME = "model-serving-api-local"
BATCH_FUNCTION_NAME = "model-serving-batch-local"
READY_TIMEOUT_S = 120.0

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


class LocalStack:
    """Start with `with LocalStack(config, packages) as stack:`; `stack.info` says where everything listens."""

    def __init__(
        self,
        config: LocalConfig,
        packages: dict[str, Path],
        catalog: Catalog | None = None,
        statements: Statements | None = None,
    ) -> None:
        """`statements` replaces the functions' synthesized IAM statements (tests that take a grant away)."""
        self.config = config
        self.statements = statements
        self.catalog = catalog or load_catalog()
        self.packages = {name: Path(path) for name, path in packages.items()}
        unknown = set(self.packages) - set(self.catalog.models)
        if unknown:
            raise ValueError(f"packages for models the catalog does not know: {sorted(unknown)}")
        self.info: StackInfo | None = None
        self.front: ApiFront | None = None
        self.pollers: list[QueuePoller] = []
        self.standin: EndpointStandIn | None = None
        self.api_function: LocalFunction | None = None
        self.batch_functions: list[LocalFunction] = []  # one execution environment per concurrent worker
        self._moto: aws.MotoServer | None = None
        self._aws_url = ""
        self._models_dir: tempfile.TemporaryDirectory[str] | None = None

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
        prefixes = aws.upload_packages(aws_url, resources.bucket, self.packages, platform)
        endpoints = {
            name: endpoint_name(name) for name in self.packages if self.catalog.model(name).target is Target.SAGEMAKER
        }
        self.standin = EndpointStandIn(
            {endpoints[name]: self.packages[name] for name in endpoints}, self.config.sagemaker_port
        )
        self.standin.start()
        admin, api_role, batch_role = self._identities(aws_url, resources, endpoints)
        settings = self.function_settings(self._models_folder(), endpoints, resources.bucket)
        lambda_memory = max((self.catalog.model(n).lambda_.memory_mb for n in self.packages), default=2048)
        api_timeout = self.config.api_timeout_s or platform.api_function_timeout_s
        batch_timeout = self.config.batch_function_timeout_s(platform)

        workers = self.config.batch_workers

        def function(
            kind: FunctionKind, name: str, role: Credentials, memory_mb: int, timeout_s: float, **update: object
        ) -> LocalFunction:
            """The function as its stack declares it: its own name, role, memory and timeout (also in its Settings)."""
            own = settings.model_copy(update={"service_name": name, "function_timeout_s": timeout_s, **update})
            assert self.standin is not None
            return LocalFunction(FunctionSpec(kind, own, aws_url, self.standin.url, role, name, memory_mb, timeout_s))

        self.api_function = function("api", API_FUNCTION_NAME, api_role, lambda_memory, api_timeout)
        # each worker is an execution environment of its own, sharing the CPUs as concurrent sandboxes share hosts
        batch_settings = {
            "batch_queue_url": resources.queue_url,
            "batch_shard_bytes": platform.batch_shard_bytes,
            "ort_threads": self.config.batch_worker_threads,
        }
        self.batch_functions = [
            function(
                "batch",
                BATCH_FUNCTION_NAME,
                batch_role,
                platform.batch_function_memory_mb,
                batch_timeout,
                **batch_settings,
            )
            for _ in range(workers)
        ]
        self.api_function.start()
        for batch_function in self.batch_functions:
            batch_function.start()
        self.front = ApiFront(self.api_function, self.config.api_port, route_keys=route_keys(self.packages))
        self.front.start()
        self.pollers = [
            QueuePoller(
                client("sqs", aws_url, batch_role),  # the event source mapping polls with the function's role
                queue_url=resources.queue_url,
                queue_arn=resources.queue_arn,
                function=batch_function,
                batch_size=platform.queue_batch_size,
                wait_s=self.config.poll_wait_s,
            )
            for batch_function in self.batch_functions
        ]
        for poller in self.pollers:
            poller.start()
        self.info = StackInfo(self.front.url, aws_url, self.standin.url, resources, prefixes, endpoints, admin)
        self.wait_ready()
        return self.info

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
        for poller in self.pollers:
            poller.stop()
        self.pollers = []
        if self.front is not None:
            self.front.stop()
            self.front = None
        for function in (self.api_function, *self.batch_functions):
            if function is not None:
                function.stop()
        if self.standin is not None:
            self.standin.stop()
            self.standin = None
        if self._moto is not None:
            self._moto.stop()  # its process holds all the stack's AWS state, so nothing is left behind
            self._moto = None
        if self._models_dir is not None:
            self._models_dir.cleanup()
            self._models_dir = None

    def _models_folder(self) -> str:
        """MODELS_DIR holds one package folder per model: symlinks, so packages may live anywhere (tests)."""
        self._models_dir = tempfile.TemporaryDirectory(prefix="local-models-")
        for name, path in self.packages.items():
            (Path(self._models_dir.name) / name).symlink_to(path.resolve(), target_is_directory=True)
        return self._models_dir.name
