"""Durable workflows compiled into stream topologies (DESIGN §2)."""
