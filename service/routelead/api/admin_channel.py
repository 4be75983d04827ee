"""How `routelead admin` and `routelead stats` reach the service: plaintext, TLS, or mutual TLS.

The deployed service listens with TLS (deploy/ sets ROUTELEAD_TLS_CERT), so an operator's
command must be able to speak it; each option's default is a ROUTELEAD_ADMIN_* setting.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # grpc loads only when a command runs (`serve` forks workers first)
    import grpc

    from routelead.settings import Settings


class ChannelError(ValueError):
    """A TLS file that cannot be read: said in one line, exit 2."""


def add_connection_options(p: Any, settings: Settings) -> None:
    p.add_argument("--target", default=settings.admin_target)
    p.add_argument(
        "--tls",
        action="store_true",
        default=settings.admin_tls,
        help="connect with TLS, system roots unless --ca-file (ROUTELEAD_ADMIN_TLS=1)",
    )
    p.add_argument(
        "--ca-file",
        default=settings.admin_ca_file,
        help="PEM CA that signed the service's certificate; implies --tls (ROUTELEAD_ADMIN_CA_FILE)",
    )
    p.add_argument(
        "--cert-file",
        default=settings.admin_cert_file,
        help="client certificate, when the service asks for one (mTLS; ROUTELEAD_ADMIN_CERT_FILE)",
    )
    p.add_argument(
        "--key-file",
        default=settings.admin_key_file,
        help="the client certificate's key (ROUTELEAD_ADMIN_KEY_FILE)",
    )
    p.add_argument(
        "--server-name",
        default=settings.admin_server_name,
        help="the name the certificate holds, when --target names the service otherwise "
        "(e.g. 127.0.0.1 inside a pod)",
    )


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ChannelError(f"cannot read the {what} {path}: {exc.strerror}") from None


def admin_channel(args: argparse.Namespace) -> grpc.aio.Channel:
    import grpc

    if not (args.tls or args.ca_file or args.cert_file):
        return grpc.aio.insecure_channel(args.target)
    if bool(args.cert_file) != bool(args.key_file):
        raise ChannelError("--cert-file and --key-file go together")
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(args.ca_file, "CA file") if args.ca_file else None,
        private_key=_read(args.key_file, "key file") if args.key_file else None,
        certificate_chain=_read(args.cert_file, "certificate file") if args.cert_file else None,
    )
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.aio.secure_channel(args.target, creds, options=options)
