"""The stream DSL and the topology graph it builds (docs/architecture.md)."""
