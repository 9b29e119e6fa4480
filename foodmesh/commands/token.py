"""``foodmesh token``: a bearer token for grpcurl or curl, signed with the configured secret."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from foodmesh.commands._common import CliError, auth
from foodmesh.core.auth import MAX_SERVICE_TOKEN_S, ROLES, mint_service_token, mint_token

if TYPE_CHECKING:
    from foodmesh.commands._common import Subparsers

__all__ = ["add_parser", "run"]


def add_parser(sub: Subparsers) -> None:
    tok = sub.add_parser(
        "token", help="print a bearer token (signed with $FOODMESH_AUTH_SECRET) for grpcurl/curl"
    )
    tok.add_argument("--role", required=True, choices=ROLES)
    tok.add_argument("--subject", required=True, help="customer, driver, restaurant or service id")
    tok.add_argument("--ttl", type=float, default=3600.0, help="seconds the token is valid")


def run(args: argparse.Namespace) -> int:
    settings = auth("token")
    try:
        if args.role == "service":  # under the service key, at most 15 minutes
            ttl = min(args.ttl, MAX_SERVICE_TOKEN_S)
            print(mint_service_token(settings.service_secret, subject=args.subject, ttl_s=ttl))
        else:
            print(mint_token(settings.secret, subject=args.subject, role=args.role, ttl_s=args.ttl))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return 0
