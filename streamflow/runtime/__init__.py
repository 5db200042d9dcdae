"""The worker: clients, tasks, the commit cycle, rebalances and restores (docs/architecture.md)."""
