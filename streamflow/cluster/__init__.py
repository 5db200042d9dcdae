"""Reaching the cluster: access checks and ACLs, topics, the worker's identity, reading a topic
to its end, and how a record bigger than one Kafka record lies on a topic."""
