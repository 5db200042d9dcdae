"""A throwaway certificate authority for the secured local cluster: CA, broker and client certs.

``streamflow dev kafka start --secure`` needs TLS material that a user would otherwise make with
openssl by hand: a CA the clients trust, a broker certificate valid for 127.0.0.1 (hostname
verification stays on, as in production) and a client certificate for mutual TLS. Made with
``cryptography``; EC P-256 keys because they take microseconds where RSA takes a noticeable
fraction of a second, and both the JVM and librdkafka (OpenSSL) accept them.

Keys are written unencrypted, readable by the owner only: the run directory is a development
cluster's, and an encrypted key would only move its password into the next file.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streamflow.errors import DevKafkaError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

_VALIDITY = dt.timedelta(days=825)
"""Long enough that a dev cluster never expires under its user, short enough for TLS clients
that cap leaf validity."""


def _crypto() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError as exc:
        raise DevKafkaError(
            "a secured local cluster needs the `cryptography` package to make its certificates "
            "(pip install 'streamflow[dev]' or pip install cryptography)"
        ) from exc


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM bytes."""

    certificate: bytes
    key: bytes


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, common_name: str) -> None:
        _crypto()
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._key: ec.EllipticCurvePrivateKey = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        self._cert: x509.Certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def certificate_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        *,
        server: bool,
        ip_addresses: tuple[str, ...] = (),
        dns_names: tuple[str, ...] = (),
    ) -> Issued:
        """A leaf certificate for ``common_name``; ``server`` certificates carry the addresses
        clients verify (a broker's are also used as its client certificate between brokers, so
        they get both usages)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        names: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses
        ]
        names += [x509.DNSName(name) for name in dns_names]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(
            certificate=cert.public_bytes(serialization.Encoding.PEM),
            key=_pkcs8(key),
        )


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8, the one unencrypted private-key form the JVM's PEM key store reads."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_private(path: Path, data: bytes | str) -> None:
    """Write a file only its owner can read (keys, passwords): created 0600, never widened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)


def parse_certificate(pem: bytes) -> x509.Certificate:
    """For tests and `status`: the certificate in ``pem``."""
    _crypto()
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem)
