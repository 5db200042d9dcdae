"""The stream DSL and the topology graph it builds (DESIGN §2)."""
