"""Generated protobuf and gRPC stubs for the foodmesh.v1 contracts (do not edit)."""
