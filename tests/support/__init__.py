"""Shared test helpers: real processes on real sockets."""
