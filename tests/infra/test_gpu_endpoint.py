"""GPU endpoint stack: Triton on SageMaker for every `target = "sagemaker"` model, autoscaled on invocations."""

from __future__ import annotations

import tarfile

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from catalog import Target
from stacks.deploy_gate import TRITON_ARCHIVE
from stacks.gpu_endpoint import TRITON_REGISTRIES, TRITON_REPOSITORY, TRITON_TAG
from tests.infra.conftest import Synthesized


def _gpu_models(synthesized: Synthesized) -> list:
    models = synthesized.config.catalog.on(Target.SAGEMAKER)
    assert models, "the catalog has a sagemaker-placed model; these tests need one"
    return models


def test_models_run_the_regional_triton_image(synthesized: Synthesized) -> None:
    template = synthesized.template("gpu").to_json()
    models = synthesized.resources("gpu", "AWS::SageMaker::Model")
    assert len(models) == len(_gpu_models(synthesized))
    for model in models.values():
        container = model["Properties"]["PrimaryContainer"]
        parts = container["Image"]["Fn::Join"][1]
        assert parts[0] == {"Fn::FindInMap": ["TritonImageAccounts", {"Ref": "AWS::Region"}, "account"]}
        assert parts[-1] == f"/{TRITON_REPOSITORY}:{TRITON_TAG}"
        url = container["ModelDataUrl"]
        assert (url if isinstance(url, str) else url["Fn::Sub"]).startswith("s3://cdk-")
    accounts = template["Mappings"]["TritonImageAccounts"]
    assert accounts["us-east-1"] == {"account": "763104351884"}
    assert {region: value["account"] for region, value in accounts.items()} == TRITON_REGISTRIES


def test_triton_default_model_matches_the_archive_it_serves(synthesized: Synthesized) -> None:
    models = list(synthesized.resources("gpu", "AWS::SageMaker::Model").values())
    served = {m["Properties"]["PrimaryContainer"]["Environment"]["SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"] for m in models}
    assert served == {entry.name for entry in _gpu_models(synthesized)}
    for name in served:
        with tarfile.open(synthesized.config.package_dir(name) / TRITON_ARCHIVE) as archive:
            members = archive.getnames()
            config_text = archive.extractfile(f"{name}/config.pbtxt").read().decode()  # type: ignore[union-attr]
        assert f"{name}/1/model.onnx" in members
        config = text_format.Parse(config_text, model_config_pb2.ModelConfig())
        assert config.name == name


def test_endpoint_config_uses_the_catalog_instance(synthesized: Synthesized) -> None:
    configs = list(synthesized.resources("gpu", "AWS::SageMaker::EndpointConfig").values())
    expected = sorted((e.sagemaker.instance_type, e.sagemaker.initial_instance_count) for e in _gpu_models(synthesized))
    actual = sorted(
        (variant["InstanceType"], variant["InitialInstanceCount"])
        for config in configs
        for variant in config["Properties"]["ProductionVariants"]
    )
    assert actual == expected
    assert all(instance.startswith("ml.g") for instance, _ in actual)
    assert len(synthesized.resources("gpu", "AWS::SageMaker::Endpoint")) == len(expected)


def test_endpoints_autoscale_on_invocations_per_instance(synthesized: Synthesized) -> None:
    (entry,) = _gpu_models(synthesized)
    endpoint_id = next(iter(synthesized.resources("gpu", "AWS::SageMaker::Endpoint")))
    (target_id, target), *_ = synthesized.resources("gpu", "AWS::ApplicationAutoScaling::ScalableTarget").items()
    properties = target["Properties"]
    assert properties["ServiceNamespace"] == "sagemaker"
    assert properties["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert properties["ResourceId"]["Fn::Join"][1][1] == {"Fn::GetAtt": [endpoint_id, "EndpointName"]}
    assert (properties["MinCapacity"], properties["MaxCapacity"]) == (
        entry.sagemaker.initial_instance_count,
        entry.sagemaker.max_instance_count,
    )
    (policy,) = synthesized.resources("gpu", "AWS::ApplicationAutoScaling::ScalingPolicy").values()
    tracking = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert policy["Properties"]["ScalingTargetId"] == {"Ref": target_id}
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert tracking["TargetValue"] == entry.sagemaker.invocations_per_instance


def test_execution_role_reads_only_its_model_archive(synthesized: Synthesized) -> None:
    (role,) = synthesized.resources("gpu", "AWS::IAM::Role").values()
    statements = role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    s3 = [s for s in statements if str(s["Action"]).startswith("s3:")]
    assert [s["Action"] for s in s3] == ["s3:GetObject"]
    assert s3[0]["Resource"]["Fn::Join"][1][-1].endswith(".gz")
