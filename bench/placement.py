"""Where each model should run: the smallest Lambda memory size that meets its p95 budget, or the GPU endpoint.

Lambda gives a function CPU in proportion to its memory (1,769 MB = one full vCPU), so a single-thread latency
measured here stretches by 1769/memory below one vCPU. Costs use AWS's published on-demand list prices (us-east-1).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from catalog import ModelEntry, load_catalog

FULL_VCPU_MB = 1769
LAMBDA_MEMORY_STEPS_MB = (128, 256, 512, 768, 1024, 1280, 1536, 1769, 2048, 2560, 3008, 3538)  # ≤ 2 vCPU: measured
MEMORY_HEADROOM = 1.25  # peak RSS of the warmed function times this must fit in the memory size

# AWS list prices, us-east-1, on-demand. Checked 2026-11-23 against the sources named in PRICES["sources"].
PRICES: dict[str, Any] = {
    "region": "us-east-1",
    "checked_on": "2026-11-23",
    "lambda_x86_gb_second_usd": 0.0000166667,
    "lambda_request_usd_per_million": 0.20,
    "http_api_request_usd_per_million": 1.00,
    "sagemaker_realtime_hourly_usd": {"ml.g5.xlarge": 1.41},
    "sources": [
        "AWS Lambda pricing (x86, first 6B GB-s): $0.0000166667 per GB-s, $0.20 per 1M requests "
        "(docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html)",
        "API Gateway HTTP API: $1.00 per million requests, first 300M/month (aws.amazon.com/api-gateway/pricing)",
        "SageMaker real-time inference ml.g5.xlarge, us-east-1: about $1.41/h as of Oct 2025 (zircon.tech, "
        "'The real cost of running AI models on AWS SageMaker'); not re-read from aws.amazon.com/sagemaker/pricing",
    ],
}


@dataclass(frozen=True)
class ModelLatency:
    """What placement needs from the bench for one model: handler latency at 1 and 2 threads, warmed RSS."""

    name: str
    single_thread_median_ms: float
    single_thread_p95_ms: float
    two_thread_median_ms: float
    two_thread_p95_ms: float
    peak_rss_mb: float


@dataclass(frozen=True)
class LambdaOption:
    memory_mb: int
    predicted_median_ms: float
    predicted_p95_ms: float
    usd_per_million: float


@dataclass(frozen=True)
class Placement:
    name: str
    catalog_target: str
    catalog_memory_mb: int
    p95_budget_ms: float
    recommended_target: str  # "lambda" or "sagemaker"
    lambda_memory_mb: int | None
    lambda_option: LambdaOption | None
    sagemaker_instance_type: str
    sagemaker_usd_per_million_at_throttle_rate: float
    break_even_requests_per_s: float | None
    reason: str


def predicted_latency_ms(memory_mb: int, single_ms: float, two_thread_ms: float) -> float:
    """Latency at a memory size: single-thread time stretched below 1 vCPU, moving to the 2-thread time at 2 vCPUs."""
    share = memory_mb / FULL_VCPU_MB
    if share <= 1.0:
        return single_ms / share
    if share >= 2.0:
        return min(single_ms, two_thread_ms)
    return single_ms + (min(single_ms, two_thread_ms) - single_ms) * (share - 1.0)


def lambda_usd_per_million(memory_mb: int, duration_ms: float) -> float:
    """Duration (billed per 1 ms) + Lambda requests + the HTTP API in front."""
    billed_s = math.ceil(duration_ms) / 1000.0
    duration = 1e6 * (memory_mb / 1024.0) * billed_s * PRICES["lambda_x86_gb_second_usd"]
    return duration + PRICES["lambda_request_usd_per_million"] + PRICES["http_api_request_usd_per_million"]


def sagemaker_usd_per_million(instance_type: str, instances: int, requests_per_s: float) -> float:
    """Instance-hours per million requests at a sustained rate, plus the HTTP API (the proxy Lambda is left out)."""
    hourly = PRICES["sagemaker_realtime_hourly_usd"][instance_type] * instances
    return hourly / (requests_per_s * 3600.0) * 1e6 + PRICES["http_api_request_usd_per_million"]


def place(entry: ModelEntry, latency: ModelLatency, throttle_rate: float) -> Placement:
    """The cheapest Lambda size meeting the p95 budget with memory for the model, else the GPU endpoint."""
    budget = entry.lambda_.p95_budget_ms
    floor_mb = latency.peak_rss_mb * MEMORY_HEADROOM
    option: LambdaOption | None = None
    for memory_mb in LAMBDA_MEMORY_STEPS_MB:
        if memory_mb < floor_mb:
            continue
        p95 = predicted_latency_ms(memory_mb, latency.single_thread_p95_ms, latency.two_thread_p95_ms)
        if p95 <= budget:
            median = predicted_latency_ms(memory_mb, latency.single_thread_median_ms, latency.two_thread_median_ms)
            option = LambdaOption(memory_mb, round(median, 3), round(p95, 3), lambda_usd_per_million(memory_mb, median))
            break
    instance_type = entry.sagemaker.instance_type
    instances = entry.sagemaker.initial_instance_count
    gpu_cost = sagemaker_usd_per_million(instance_type, instances, throttle_rate)
    break_even = None
    if option is not None:
        per_request = (option.usd_per_million - PRICES["http_api_request_usd_per_million"]) / 1e6
        hourly = PRICES["sagemaker_realtime_hourly_usd"][instance_type] * instances
        break_even = hourly / 3600.0 / per_request
        reason = (
            f"{option.memory_mb} MB meets p95 {budget:g} ms (predicted {option.predicted_p95_ms:.1f} ms, "
            f"{latency.peak_rss_mb:.0f} MB RSS); Lambda stays cheaper than an always-on {instance_type} "
            f"below {break_even:,.0f} requests/s"
        )
    else:
        reason = (
            f"no Lambda size up to {LAMBDA_MEMORY_STEPS_MB[-1]} MB meets p95 {budget:g} ms "
            f"(single-thread p95 {latency.single_thread_p95_ms:.1f} ms): GPU endpoint"
        )
    return Placement(
        name=entry.name,
        catalog_target=entry.target.value,
        catalog_memory_mb=entry.lambda_.memory_mb,
        p95_budget_ms=budget,
        recommended_target="lambda" if option else "sagemaker",
        lambda_memory_mb=option.memory_mb if option else None,
        lambda_option=option,
        sagemaker_instance_type=instance_type,
        sagemaker_usd_per_million_at_throttle_rate=round(gpu_cost, 2),
        break_even_requests_per_s=round(break_even, 1) if break_even else None,
        reason=reason,
    )


def place_all(latencies: dict[str, ModelLatency]) -> list[Placement]:
    catalog = load_catalog()
    rate = catalog.platform.api_throttle_rate
    return [place(catalog.model(name), latency, rate) for name, latency in latencies.items()]


def write_placement(path: Path, placements: list[Placement], latencies: dict[str, ModelLatency]) -> Path:
    """build/bench/placement.json: read by `cdk synth` (app.py) to size each model's function."""
    document = {
        "format": "bench-placement/1",
        "prices": PRICES,
        "assumptions": {
            "full_vcpu_mb": FULL_VCPU_MB,
            "memory_headroom_over_peak_rss": MEMORY_HEADROOM,
            "sagemaker_rate": "catalog platform.api_throttle_rate, sustained (the endpoint's best case)",
        },
        "models": {p.name: {**asdict(p), "measured": asdict(latencies[p.name])} for p in placements},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def placement_table(placements: list[Placement]) -> str:
    rows = [
        "| model | catalog | p95 budget | recommended | Lambda memory | predicted p95 | $ / 1M on Lambda "
        "| $ / 1M on GPU @ throttle rate | break-even req/s |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for p in placements:
        lam = p.lambda_option
        rows.append(
            f"| {p.name} | {p.catalog_target} {p.catalog_memory_mb} MB | {p.p95_budget_ms:g} ms "
            f"| {p.recommended_target} "
            f"| {lam.memory_mb if lam else '-'} | {f'{lam.predicted_p95_ms:.1f} ms' if lam else '-'} "
            f"| {f'{lam.usd_per_million:.2f}' if lam else '-'} | {p.sagemaker_usd_per_million_at_throttle_rate:.2f} "
            f"| {p.break_even_requests_per_s if p.break_even_requests_per_s is not None else '-'} |"
        )
    return "\n".join(rows) + "\n"
