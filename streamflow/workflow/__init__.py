"""Durable workflows compiled into stream topologies (docs/architecture.md)."""
