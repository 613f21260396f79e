"""Item 7: what each model's Lambda image adds to its base image: the installed runtime requirements and its package."""

from __future__ import annotations

from bench import payload
from bench.report import Measurement, Target, compare
from bench.run import Run
from catalog import Target as ServingTarget  # bench.report has its own Target (a measurement goal)
from catalog import load_catalog

PAYLOAD_LIMIT_MB = 250.0  # every image (issue 12)


def measure(run: Run) -> list[Measurement]:
    installed = payload.requirements_size(run.settings.out / "payload-site", offline=run.settings.offline_payload)
    catalog = load_catalog()
    measurements = []
    for name, entry in catalog.models.items():
        on_lambda = entry.target is ServingTarget.LAMBDA  # a GPU-placed model's image leaves its graph out
        package_mb = payload.package_bytes(run.packages.package(name), with_graph=on_lambda) / 1e6
        total_mb = installed.bytes / 1e6 + package_mb
        measurements.append(
            compare(
                7,
                f"image payload {name}: runtime requirements + package (MB)",
                None,
                ratio=total_mb,
                ratio_means="MB: installed runtime requirements + the package as the image carries it",
                target=Target("<=", PAYLOAD_LIMIT_MB, unit=" MB"),
                headline=f"image payload, {name}",
                detail={
                    "total_mb": round(total_mb, 1),
                    "requirements_mb": round(installed.bytes / 1e6, 1),
                    "package_mb": round(package_mb, 1),
                    "method": installed.method,
                },
            )
        )
    return measurements
