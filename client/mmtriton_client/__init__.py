"""Clients of the served model: gRPC library, CLI and web page."""
