"""TLS with mutual authentication for the Dask cluster.

Two sources, never mixed:

- **An existing cluster** is configured the Dask way: ``distributed.comm.tls.*`` (in a Dask YAML file,
  or as ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``, ``…__CLIENT__CERT``, ``…__WORKER__KEY`` variables).
  The notebook, the server and ``burstlab worker`` all read it through ``distributed.Security()``.
- **The embedded cluster** makes its own certificate authority the first time it starts, under
  ``BURSTLAB_HOME/tls`` (directory 0700, files 0600): a CA certificate and one leaf certificate and key
  that the scheduler, the workers and the clients present. The CA's private key is never written:
  nothing else can be signed by it, so whoever holds neither the leaf key nor a new CA cannot talk to
  the scheduler. Dask checks the peer's chain, not its host name (IP addresses, one cluster's CA).
"""

from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path

from burstlab.errors import BurstlabError

CA_FILE = "ca.pem"
CERT_FILE = "node.pem"
KEY_FILE = "node-key.pem"
VALID_DAYS = 3650


def tls_dir(home: str | os.PathLike) -> Path:
    return Path(home) / "tls"


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by this user only."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def make_certificates(directory: str | os.PathLike, common_name: str = "burstlab") -> Path:
    """A fresh CA and one leaf certificate it signed, in ``directory`` (0700; files 0600).

    Returns the directory. Safe against a second process doing the same at the same time: the
    files are written under a lock and the first complete set wins.
    """
    import fcntl

    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - cryptography comes with jupyter_server
        raise BurstlabError("TLS for the embedded cluster needs the `cryptography` package: pip install cryptography") from exc

    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    with open(directory / ".lock", "w") as lock:
        os.fchmod(lock.fileno(), 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((directory / f).exists() for f in (CA_FILE, CERT_FILE, KEY_FILE)):
            return directory
        now = datetime.datetime.now(datetime.timezone.utc)
        not_before = now - datetime.timedelta(days=1)  # hosts whose clocks are a little behind
        not_after = now + datetime.timedelta(days=VALID_DAYS)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} CA")])
        ca_cert = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        _write_private(directory / KEY_FILE, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
        _write_private(directory / CERT_FILE, cert.public_bytes(pem))
        _write_private(directory / CA_FILE, ca_cert.public_bytes(pem))  # last: its presence means "complete"
        return directory


def security_from(directory: str | os.PathLike):
    """A ``distributed.Security`` presenting ``directory``'s leaf certificate in every role."""
    from distributed import Security

    d = Path(directory)
    ca, cert, key = str(d / CA_FILE), str(d / CERT_FILE), str(d / KEY_FILE)
    return Security(
        tls_ca_file=ca, require_encryption=True,
        tls_client_cert=cert, tls_client_key=key,
        tls_scheduler_cert=cert, tls_scheduler_key=key,
        tls_worker_cert=cert, tls_worker_key=key,
    )


def embedded_security(home: str | os.PathLike):
    """The embedded cluster's Security, making its certificates under ``home`` on first use."""
    return security_from(make_certificates(tls_dir(home)))


def configured_security():
    """Security from Dask's own configuration (``distributed.comm.tls.*``), or None when it sets no
    CA file (then connections follow the address: ``tcp://`` in the clear)."""
    import dask
    from distributed import Security

    if not dask.config.get("distributed.comm.tls.ca-file", None):
        return None
    return Security()


def security_for(address: str, home: str | os.PathLike):
    """What a client of ``address`` presents: Dask's TLS config if it has one; else, for a ``tls://``
    address, the embedded cluster's certificates under ``home`` (a kernel of a server joining the
    server's cluster); else None (plain Dask defaults)."""
    configured = configured_security()
    if configured is not None:
        return configured
    if address.startswith("tls://"):
        # This workspace's home first; then $BURSTLAB_HOME (a process given another home, joining the
        # embedded cluster of the process that started it).
        candidates = [tls_dir(home)]
        if os.environ.get("BURSTLAB_HOME"):
            candidates.append(tls_dir(os.environ["BURSTLAB_HOME"]))
        for d in candidates:
            if (d / CA_FILE).exists():
                return security_from(d)
        raise BurstlabError(
            f"The scheduler at {address} speaks TLS but no certificate is configured: set Dask's "
            "distributed.comm.tls.ca-file and distributed.comm.tls.client.cert/key (or the "
            "DASK_DISTRIBUTED__COMM__TLS__… variables), or point BURSTLAB_HOME at the workspace that made "
            f"the cluster (looked in {', '.join(map(str, dict.fromkeys(candidates)))})."
        )
    return None


def dask_env(directory: str | os.PathLike) -> dict[str, str]:
    """The ``DASK_DISTRIBUTED__COMM__…`` variables that configure a Dask process (scheduler, worker,
    client) with ``directory``'s certificates: how an existing cluster is set up the Dask way."""
    d = Path(directory)
    env = {"DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(d / CA_FILE),
           "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
    for role in ("SCHEDULER", "WORKER", "CLIENT"):
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT"] = str(d / CERT_FILE)
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__KEY"] = str(d / KEY_FILE)
    return env


def dask_config(directory: str | os.PathLike) -> dict:
    """The same settings as :func:`dask_env`, as a ``dask.config.set`` mapping."""
    d = Path(directory)
    cfg = {"distributed.comm.tls.ca-file": str(d / CA_FILE), "distributed.comm.require-encryption": True}
    for role in ("scheduler", "worker", "client"):
        cfg[f"distributed.comm.tls.{role}.cert"] = str(d / CERT_FILE)
        cfg[f"distributed.comm.tls.{role}.key"] = str(d / KEY_FILE)
    return cfg


__all__ = ["configured_security", "dask_config", "dask_env", "embedded_security", "make_certificates",
           "security_for", "security_from", "tls_dir"]
