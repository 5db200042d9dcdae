"""The worker: consumer/producer, tasks, the commit cycle, rebalances and restores (DESIGN §3–4)."""
