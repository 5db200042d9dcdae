"""An external Confluent-compatible Schema Registry, through confluent-kafka's client.

Used instead of the Kafka-native registry when its url is configured (``settings.py``). Kept
thin on purpose: the server owns subjects, versions, ids and enforces its own compatibility
modes. Two things are added on our side: compatibility is also checked locally (with
``compatibility.py``) before registering, so a refusal names the field and the rule the way every
other streamflow refusal does; and a subject created by streamflow gets the mode its user needs
(FULL_TRANSITIVE for stores) instead of the server's global default.

Its settings (url, basic auth, TLS and mutual TLS, bearer tokens) are resolved by
``settings.py``. What goes wrong between us and the server (a refused password, a missing
permission, an untrusted certificate, nothing listening) becomes a ``ConfigError`` saying so,
naming the URL, the user and the setting to check: the HTTP client's own exceptions say
"ConnectError" or "401" and leave the user to guess which of five settings is wrong.

Needs the client's extras: ``pip install 'confluent-kafka[schemaregistry]'``.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from streamflow.errors import ConfigError, SchemaError, SchemaIncompatible, StreamflowError
from streamflow.serde.avro.schema import Schema, canonical_schema
from streamflow.serde.registry.base import RegisteredSchema, incompatible_error
from streamflow.serde.registry.compatibility import (
    CompatibilityMode,
    Incompatibility,
    check_compatibility,
)
from streamflow.serde.registry.settings import TABLE, USER_INFO_ENV, RegistrySettings

_SUBJECT_NOT_FOUND = 40401
_SCHEMA_NOT_FOUND = 40403
_NO_SUBJECT_COMPATIBILITY = 40408


def _code(exc: Exception) -> int | None:
    """The registry's error code of a ``SchemaRegistryError`` (None for other errors)."""
    code = getattr(exc, "error_code", None)
    return code if isinstance(code, int) else None


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "http_status_code", None)
    return status if isinstance(status, int) else None


class ConfluentSchemaRegistry:
    """A ``SchemaRegistry`` backed by a ``confluent_kafka.schema_registry.SchemaRegistryClient``
    (or any object with its methods: tests pass a stub)."""

    def __init__(
        self,
        client: Any,
        make_schema: Callable[[str], Any],
        settings: RegistrySettings | None = None,
    ) -> None:
        self._client = client
        self._make_schema = make_schema
        self._settings = settings or RegistrySettings()
        self._by_id: dict[int, str] = {}

    @classmethod
    def from_settings(cls, settings: RegistrySettings) -> ConfluentSchemaRegistry:
        """The registry at ``settings.url``, through confluent-kafka's client. Raises ConfigError
        naming the setting at fault when the client refuses its configuration."""
        try:
            from confluent_kafka.schema_registry import Schema as SRSchema
            from confluent_kafka.schema_registry import SchemaRegistryClient
        except ImportError as exc:
            raise ConfigError(
                f"a schema registry is configured ({settings.shown_url}) but confluent-kafka's "
                f"schema registry client cannot be imported ({exc}); "
                "pip install 'confluent-kafka[schemaregistry]'"
            ) from exc
        conf = settings.client_conf()
        try:
            client = SchemaRegistryClient(conf)
        except ssl.SSLError as exc:  # a certificate or key file it could not load
            files = [k for k in ("ssl.certificate.location", "ssl.key.location") if k in conf]
            raise ConfigError(
                f"the schema registry client cannot load its TLS files "
                f"({', '.join(settings.where(k) for k in files) or 'ssl.ca.location'}): "
                f"{exc.reason or exc}; check they are PEM, belong together, and "
                "ssl.key.password if the key is encrypted"
            ) from None
        except (ValueError, TypeError, OSError) as exc:
            raise ConfigError(f"schema registry settings refused: {exc}") from None
        return cls(client, lambda text: SRSchema(text, "AVRO"), settings)

    # -- SchemaRegistry --------------------------------------------------------------------------

    def register(
        self, subject: str, schema: Schema | str, *, default_mode: CompatibilityMode
    ) -> RegisteredSchema:
        text = canonical_schema(schema)
        versions = self.versions(subject)
        for version in versions:
            if canonical_schema(version.schema) == text:
                return version
        mode = self.mode(subject) or default_mode
        problems = check_compatibility(mode, [v.schema for v in versions], text)
        if problems:
            raise incompatible_error(f"subject {subject!r}", mode, problems)
        if not versions and self.mode(subject) is None:
            self.set_mode(subject, default_mode)
        sr_schema = self._make_schema(text)
        with self._talking(f"register a schema under subject {subject!r}"):
            try:
                self._client.register_schema(subject, sr_schema)
                found = self._client.lookup_schema(subject, sr_schema)
            except Exception as exc:
                if _status(exc) == 409:
                    raise SchemaIncompatible(
                        f"subject {subject!r}: the schema registry refused the schema as "
                        f"incompatible: {exc}"
                    ) from exc
                raise
        return self._registered(subject, found)

    def check(
        self, subject: str, schema: Schema | str, *, default_mode: CompatibilityMode
    ) -> list[Incompatibility]:
        text = canonical_schema(schema)
        versions = self.versions(subject)
        if any(canonical_schema(v.schema) == text for v in versions):
            return []
        mode = self.mode(subject) or default_mode
        return check_compatibility(mode, [v.schema for v in versions], text)

    def schema(self, schema_id: int) -> str:
        text = self._by_id.get(schema_id)
        if text is None:
            with self._talking(f"read schema id {schema_id}"):
                try:
                    text = str(self._client.get_schema(schema_id).schema_str)
                except Exception as exc:
                    if _code(exc) == _SCHEMA_NOT_FOUND or _status(exc) == 404:
                        raise SchemaError(
                            f"schema id {schema_id} is not registered: {exc}"
                        ) from exc
                    raise
            self._by_id[schema_id] = text
        return text

    def subjects(self) -> list[str]:
        with self._talking("list subjects"):
            return sorted(self._client.get_subjects())

    def versions(self, subject: str) -> list[RegisteredSchema]:
        with self._talking(f"read the versions of subject {subject!r}"):
            try:
                numbers = self._client.get_versions(subject)
            except Exception as exc:
                if _code(exc) == _SUBJECT_NOT_FOUND or _status(exc) == 404:
                    return []
                raise
            return [
                self._registered(subject, self._client.get_version(subject, n))
                for n in sorted(numbers)
            ]

    def mode(self, subject: str) -> CompatibilityMode | None:
        with self._talking(f"read the compatibility mode of subject {subject!r}"):
            try:
                level = self._client.get_compatibility(subject)
            except Exception as exc:
                code = _code(exc)
                if code in (_SUBJECT_NOT_FOUND, _NO_SUBJECT_COMPATIBILITY) or _status(exc) == 404:
                    return None
                raise
        return CompatibilityMode.parse(level) if level else None

    def set_mode(self, subject: str, mode: CompatibilityMode) -> None:
        with self._talking(f"set the compatibility mode of subject {subject!r}"):
            self._client.set_compatibility(subject_name=subject, level=mode.value)

    def _registered(self, subject: str, found: Any) -> RegisteredSchema:
        text = str(found.schema.schema_str)
        self._by_id.setdefault(int(found.schema_id), text)
        return RegisteredSchema(subject, int(found.version), int(found.schema_id), text)

    # -- what went wrong on the way to the server ------------------------------------------------

    @contextmanager
    def _talking(self, action: str) -> Iterator[None]:
        """Run one exchange with the server; authentication, authorization, TLS and connection
        failures become a ConfigError that says which (``action`` says what we were doing)."""
        try:
            yield
        except StreamflowError:
            raise
        except Exception as exc:
            clear = _explained(exc, action, self._settings)
            if clear is None:
                raise
            raise clear from exc


def _explained(exc: Exception, action: str, settings: RegistrySettings) -> ConfigError | None:
    """The ConfigError ``exc`` means, or None when it is no setup problem (a 404, a 409...)."""
    at = f"the schema registry at {settings.shown_url}" if settings.url else "the schema registry"
    user = settings.user
    credentials = _credentials_hint(settings)
    status = _status(exc)
    if status == 401:
        if user is None and "bearer.auth.credentials.source" not in settings.values:
            return ConfigError(
                f"{at} requires authentication (HTTP 401) to {action}, and no credentials are "
                f"configured: set basic.auth.user.info (user:password) in the [{TABLE}] table "
                f"of the config file or ${USER_INFO_ENV}"
            )
        who = f"user {user!r}" if user is not None else "the bearer token"
        return ConfigError(
            f"authentication failed: {at} refused the credentials of {who} (HTTP 401) to "
            f"{action}; check {credentials}"
        )
    if status == 403:
        who = f"user {user!r}" if user is not None else "the authenticated principal"
        return ConfigError(
            f"authorization failed: {at} does not allow {who} to {action} (HTTP 403); grant "
            f"it access on the registry, or check that {credentials} names the right user"
        )
    if status is not None or not _is_transport_error(exc):
        return None
    causes = list(_causes(exc))
    verify = next((e for e in causes if isinstance(e, ssl.SSLCertVerificationError)), None)
    if verify is not None:
        reason = verify.verify_message or verify.reason or str(verify)
        if "hostname" in str(reason).lower():
            fix = f"the host of {settings.where('url')} must be one the certificate names"
        else:
            ca = settings.values.get("ssl.ca.location")
            now = f"now {ca}{_from(settings, 'ssl.ca.location')}" if ca else "now the default CAs"
            fix = f"set ssl.ca.location to the CA certificate that signed it ({now})"
        return ConfigError(
            f"TLS to {at} failed: the registry's certificate could not be verified "
            f"(certificate verify failed: {reason}); {fix}"
        )
    tls = next((e for e in causes if isinstance(e, ssl.SSLError)), None)
    if tls is not None:
        reason = str(tls.reason or tls)
        if "alert" in reason.lower():  # the server ended the handshake: our certificate, or none
            if "ssl.certificate.location" in settings.values:
                fix = (
                    f"check that {settings.where('ssl.certificate.location')} is signed by a "
                    "CA the registry trusts"
                )
            else:
                fix = (
                    "it wants a client certificate (mutual TLS): set ssl.certificate.location "
                    "and ssl.key.location"
                )
            return ConfigError(f"{at} refused the TLS connection ({reason}): {fix}")
        if not isinstance(tls, ssl.SSLEOFError) or "ssl.certificate.location" in settings.values:
            return ConfigError(f"TLS to {at} failed ({reason}); check the url and ssl.* settings")
    if any(isinstance(e, ConnectionRefusedError) for e in causes) or "refused" in str(exc):
        return ConfigError(
            f"cannot connect to {at}: connection refused; is the registry running there, and "
            f"is {settings.where('url')} right?"
        )
    if "ssl.certificate.location" not in settings.values and _reset(causes):
        # TLS 1.3: a server wanting a client certificate may hang up after the handshake
        # instead of sending its alert; the client then sees EOF or a reset
        return ConfigError(
            f"{at} closed the connection to {action}: if it requires mutual TLS, set "
            "ssl.certificate.location and ssl.key.location"
        )
    return ConfigError(
        f"cannot reach {at} to {action}: {type(exc).__name__}: {exc}; check {settings.where('url')}"
    )


def _credentials_hint(settings: RegistrySettings) -> str:
    """The setting that carries the credentials (with its source): what to check on a 401."""
    if "basic.auth.user.info" in settings.values:
        return f"basic.auth.user.info (user:password{_from(settings, 'basic.auth.user.info')})"
    if "bearer.auth.credentials.source" in settings.values:
        return f"the bearer.auth.* settings ({settings.where('bearer.auth.credentials.source')})"
    if settings.user is not None:
        return f"the user and password in {settings.where('url')}"
    return "basic.auth.user.info"


def _from(settings: RegistrySettings, key: str) -> str:
    source = settings.sources.get(key)
    return f", from {source}" if source else ""


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from (the HTTP client wraps the ssl and socket errors)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _http_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(errors before any response, errors of a connection the server dropped) of the HTTP
    client confluent-kafka's registry client uses: it prefers httpx2, then httpx."""
    http: Any
    try:
        import httpx2 as http  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        try:
            import httpx as http
        except ImportError:  # no registry client installed: none of its errors can occur
            return (), ()
    return (http.TransportError,), (http.RemoteProtocolError, http.ReadError)


_TRANSPORT_ERRORS, _DROPPED_ERRORS = _http_errors()


def _is_transport_error(exc: BaseException) -> bool:
    """A failure before any HTTP response (the HTTP client's ``TransportError`` or a plain
    socket error)."""
    return any(isinstance(cause, (OSError, *_TRANSPORT_ERRORS)) for cause in _causes(exc))


def _reset(causes: list[BaseException]) -> bool:
    return any(
        isinstance(e, (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, *_DROPPED_ERRORS))
        for e in causes
    )
