"""Certificates and keys for a real federation: a CA, the SuperLink's TLS certificate, SuperNode auth key pairs.

Flower 1.42 encrypts the link with TLS (the SuperLink presents ``server.pem``, every client checks it against
``ca.crt``) and authenticates SuperNodes by key pair: each node signs with its private key (OpenSSH-format NIST EC
key, as ``ssh-keygen -t ecdsa -b 384`` writes), and the SuperLink accepts only public keys registered with
``flwr supernode register``. The CA's private key signs server certificates only; it never leaves the server machine.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedface.io import atomic_write_bytes

CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.crt", "ca.key", "server.pem", "server.key"
CURVE = ec.SECP384R1()  # a NIST curve: Flower refuses node keys on other curves


class CertificateError(ValueError):
    """A certificate or key that cannot be used; the message names the file and what to do."""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedface"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_secret(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)
    path.chmod(0o600)  # private keys: owner only


def make_ca(folder: Path, days: int = 365) -> None:
    """A self-signed CA (``ca.crt`` for everyone, ``ca.key`` stays on the machine that signs)."""
    key = ec.generate_private_key(CURVE)
    now = dt.datetime.now(dt.timezone.utc)
    name = _name("fedface federation CA")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    _write_secret(folder / CA_KEY, _pem_key(key))
    atomic_write_bytes(folder / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_server_cert(folder: Path, hosts: list[str], days: int = 365,
                     not_before: dt.datetime | None = None) -> None:
    """``server.pem``/``server.key`` for the SuperLink, signed by the CA in ``folder``, valid for ``hosts``
    (the addresses SuperNodes dial: IPs and/or DNS names; a client refuses a certificate that does not name them)."""
    ca_key = serialization.load_pem_private_key(_read(folder / CA_KEY, "the CA key"), None)
    ca = x509.load_pem_x509_certificate(_read(folder / CA_CERT, "the CA certificate"))
    key = ec.generate_private_key(CURVE)
    start = not_before or dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    _write_secret(folder / SERVER_KEY, _pem_key(key))
    atomic_write_bytes(folder / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM))


def make_node_key(path: Path) -> Path:
    """A SuperNode's auth key pair: ``path`` (private, stays on the node) and ``path.pub`` (registered on the link)."""
    key = ec.generate_private_key(CURVE)
    _write_secret(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    pub = path.with_name(path.name + ".pub")
    atomic_write_bytes(pub, key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                          serialization.PublicFormat.OpenSSH) + b"\n")
    return pub


def _read(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise CertificateError(f"{what} {path} is missing: create it with `scripts/deploy certs` (or copy it from "
                               "the server machine)")
    return path.read_bytes()


def load_cert(path: Path, what: str) -> x509.Certificate:
    """The certificate at ``path``; CertificateError naming it when missing, unreadable or outside its validity."""
    try:
        cert = x509.load_pem_x509_certificate(_read(path, what))
    except ValueError as err:
        raise CertificateError(f"{what} {path} is not a PEM certificate ({err})") from None
    now = dt.datetime.now(dt.timezone.utc)
    if cert.not_valid_after_utc < now:
        raise CertificateError(f"{what} {path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: issue a "
                               "new one with `scripts/deploy certs --renew`")
    if cert.not_valid_before_utc > now:
        raise CertificateError(f"{what} {path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
                               "(check this machine's clock)")
    return cert


def check_server_cert(folder: Path, host: str) -> None:
    """Before starting a SuperLink: the CA and server certificate exist, are in date, the CA signed the server
    certificate, and it names ``host`` (else every SuperNode would refuse the link)."""
    ca = load_cert(folder / CA_CERT, "the CA certificate")
    cert = load_cert(folder / SERVER_CERT, "the SuperLink certificate")
    _read(folder / SERVER_KEY, "the SuperLink private key")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(f"the SuperLink certificate {folder / SERVER_CERT} was not signed by the CA "
                               f"{folder / CA_CERT} (wrong CA): re-issue it with `scripts/deploy certs --renew`"
                               ) from None
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    listed = [str(v) for v in names.get_values_for_type(x509.IPAddress)] + names.get_values_for_type(x509.DNSName)
    if host not in listed and host not in ("0.0.0.0", "::"):
        raise CertificateError(f"the SuperLink certificate {folder / SERVER_CERT} names {listed}, not {host}: add "
                               "it to superlink.cert_hosts and run `scripts/deploy certs --renew`")
