"""HTTP gateway: JSON/REST and server-sent events over the foodmesh gRPC services."""

from gateway._config import ConfigError, GatewayConfig
from gateway.app import Gateway, main, serve

__all__ = ["ConfigError", "Gateway", "GatewayConfig", "main", "serve"]
