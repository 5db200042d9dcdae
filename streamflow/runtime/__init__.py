"""The worker: consumer/producer, tasks, the commit cycle, rebalances and restores (docs/architecture.md)."""
