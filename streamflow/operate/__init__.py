"""What an operator reads and does: the worker's HTTP endpoint and metrics, the group's
status, state queries, dead letters, replay and store rebuilds.

Below the engine (``runtime``) in the layers: the worker serves the endpoint, metrics and
queries, so these modules know nothing of the worker; the CLI on top uses both."""
