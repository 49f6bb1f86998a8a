"""The wire edge: ttrpc (and gRPC) servers, the client, conversion and status mapping."""
