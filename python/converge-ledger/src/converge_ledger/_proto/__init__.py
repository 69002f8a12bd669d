"""Generated gRPC stubs (see scripts/generate_proto.py)."""
