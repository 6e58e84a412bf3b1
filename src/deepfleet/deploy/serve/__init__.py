"""`deepfleet serve`: an Open Inference Protocol v2 server with dynamic micro-batching."""

from deepfleet.deploy.serve._app import app_from_env, create_app
from deepfleet.deploy.serve._batcher import DynamicBatcher
from deepfleet.deploy.serve._config import TOKEN_ENV, ServeConfig, read_token
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._run import serve

__all__ = [
    "TOKEN_ENV",
    "DynamicBatcher",
    "RequestError",
    "ServeConfig",
    "app_from_env",
    "create_app",
    "read_token",
    "serve",
]
