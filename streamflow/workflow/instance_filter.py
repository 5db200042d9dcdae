"""Which instances a listing wants: status, version, start time and search attributes.

A worker applies the filter while it pages through its stores (``/instances/``), so a filter
that matches few instances still returns full pages; the client applies the same filter to a
changelog read when no worker serves an endpoint. One definition, so both agree.

Search attributes are what the workflow set with ``ctx.set_attributes(customer="c-1", ...)``:
scalars kept in the instance's header (``attributes``), matched by equality.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

ATTRIBUTE_PREFIX = "attr."
"""Query parameters ``attr.<name>=<JSON value>`` select by a search attribute."""

MAX_ATTRIBUTES = 32
"""Search attributes per instance: they live in the header, which every transition writes."""
MAX_ATTRIBUTE_CHARS = 256
"""The longest text value a search attribute may have (longer ones: store a reference)."""

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class InstanceFilter:
    status: str | None = None
    version: int | None = None
    started_from_ms: int | None = None
    """Started at or after this time (ms since the epoch)."""
    started_to_ms: int | None = None
    """Started before this time."""
    attributes: tuple[tuple[str, Scalar], ...] = ()
    """Each (name, value) must equal the instance's search attribute."""

    def matches(self, header: dict[str, Any]) -> bool:
        if self.status is not None and header.get("status") != self.status:
            return False
        if self.version is not None and header.get("version") != self.version:
            return False
        started = header.get("started_ms") or 0
        if self.started_from_ms is not None and started < self.started_from_ms:
            return False
        if self.started_to_ms is not None and started >= self.started_to_ms:
            return False
        if self.attributes:
            mine = header.get("attributes") or {}
            return all(name in mine and mine[name] == value for name, value in self.attributes)
        return True

    def to_query(self) -> dict[str, str]:
        query: dict[str, str] = {}
        if self.status is not None:
            query["status"] = self.status
        if self.version is not None:
            query["version"] = str(self.version)
        if self.started_from_ms is not None:
            query["started_from"] = str(self.started_from_ms)
        if self.started_to_ms is not None:
            query["started_to"] = str(self.started_to_ms)
        for name, value in self.attributes:
            query[ATTRIBUTE_PREFIX + name] = orjson.dumps(value).decode()
        return query

    @classmethod
    def of(
        cls,
        status: str | None = None,
        version: int | None = None,
        started_after: datetime | None = None,
        started_before: datetime | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> InstanceFilter:
        """The filter of ``client.list``'s keyword arguments."""
        return cls(
            status=status,
            version=version,
            started_from_ms=None if started_after is None else _ms(started_after),
            started_to_ms=None if started_before is None else _ms(started_before),
            attributes=tuple(sorted((attributes or {}).items())),
        )

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> InstanceFilter:
        """The filter a request asks for; ``ValueError`` naming the parameter at fault."""

        def number(name: str) -> int | None:
            raw = query.get(name, [None])[0]
            if raw is None or raw == "":
                return None
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"{name} must be an integer, not {raw!r}") from None

        attributes = []
        for name, values in sorted(query.items()):
            if name.startswith(ATTRIBUTE_PREFIX):
                try:
                    value = orjson.loads(values[0])
                except orjson.JSONDecodeError:
                    value = values[0]  # plain text from a URL typed by hand
                attributes.append((name.removeprefix(ATTRIBUTE_PREFIX), value))
        return cls(
            status=query.get("status", [None])[0] or None,
            version=number("version"),
            started_from_ms=number("started_from"),
            started_to_ms=number("started_to"),
            attributes=tuple(attributes),
        )


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def checked_attributes(current: dict[str, Any], values: dict[str, Any]) -> dict[str, Scalar]:
    """``current`` updated with ``values``, or ``TypeError``/``ValueError`` naming the one at
    fault: attributes are scalars, bounded in number and size (they ride in the header)."""
    merged = dict(current)
    for name, value in values.items():
        if value is not None and type(value) not in (str, int, float, bool):
            raise TypeError(
                f"search attribute {name!r} must be a str, int, float, bool or None, not "
                f"{type(value).__name__}"
            )
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_CHARS:
            raise ValueError(
                f"search attribute {name!r} is {len(value)} characters, over the "
                f"{MAX_ATTRIBUTE_CHARS} a search attribute may have"
            )
        merged[name] = value
    if len(merged) > MAX_ATTRIBUTES:
        raise ValueError(
            f"an instance may have at most {MAX_ATTRIBUTES} search attributes, not {len(merged)}"
        )
    return merged
