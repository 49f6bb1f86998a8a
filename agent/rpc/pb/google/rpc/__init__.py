"""Generated protobuf modules; do not edit (see proto/generate.py)."""
