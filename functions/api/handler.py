"""The API function's Lambda entry point: settings from the environment, verified and warmed models, once a sandbox."""

from __future__ import annotations

from functions.api.app import create_api
from functions.runtime.models import load_models
from functions.runtime.settings import Settings

settings = Settings.from_env()
function = create_api(settings, load_models(settings))
lambda_handler = function.lambda_handler
