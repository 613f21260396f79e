"""The drift check's Lambda entry point: settings from the environment, the packages' manifests, an S3 client."""

from __future__ import annotations

import boto3

from functions.monitoring.app import create_monitoring_handler
from functions.runtime.models import package_dirs
from functions.runtime.package import read_manifest
from functions.runtime.settings import Settings

settings = Settings.from_env()
manifests = {manifest.name: manifest for manifest in map(read_manifest, package_dirs(settings.models_dir))}
lambda_handler = create_monitoring_handler(settings, manifests, boto3.client("s3")).lambda_handler
