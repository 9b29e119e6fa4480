"""HTTP gateway: JSON/REST and server-sent events over the foodmesh gRPC services."""
