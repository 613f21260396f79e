"""The batch function's Lambda entry point: settings from the environment, models, S3 and SQS clients, once."""

from __future__ import annotations

import boto3

from functions.batch.app import create_batch_handler
from functions.runtime.models import load_models
from functions.runtime.settings import Settings

settings = Settings.from_env()
function = create_batch_handler(settings, load_models(settings), boto3.client("s3"), boto3.client("sqs"))
lambda_handler = function.lambda_handler
