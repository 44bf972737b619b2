"""Throw-away certificates for the TLS redis-server fixtures (tests/test_security.py, tests/test_compat_options.py).

The CA and the server certificate carry the extensions Python 3.13's default context requires
(``VERIFY_X509_STRICT``): a CA with critical basicConstraints and keyUsage, a server certificate with an
authority key identifier, keyUsage and serverAuth. Without them 3.13 refuses the CA ("CA cert does not
include key usage extension") while 3.10-3.12 accept it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

SERVER_EXT = ("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
              "authorityKeyIdentifier=keyid,issuer\n"
              "basicConstraints=CA:FALSE\n"
              "keyUsage=critical,digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=serverAuth\n")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> None:
    """``{name}.pem``/``{name}.key`` in ``d``: a self-signed CA valid for 2 days."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_server_certs(d: Path, cas: Iterable[str] = ("ca",)) -> None:
    """The CAs named ``cas`` and ``server.pem``/``server.key`` for 127.0.0.1, signed by the first of them."""
    cas = list(cas)
    for name in cas:
        make_ca(d, name)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text(SERVER_EXT)
    openssl("x509", "-req", "-in", "server.csr", "-CA", f"{cas[0]}.pem", "-CAkey", f"{cas[0]}.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
