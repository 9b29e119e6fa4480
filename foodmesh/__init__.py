"""foodmesh: a real-time food-delivery platform built as a mesh of async gRPC services."""

__version__ = "0.1.0"
__all__ = ["__version__"]
