"""`brushwork keys`: CURVE keys for a daemon that listens beyond loopback."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from brushwork import curve


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keys",
        help="make CURVE keys for a daemon reachable over the network",
        description=__doc__,
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    gen = actions.add_parser(
        "generate",
        help="make the daemon's key pair, or with --client a client's (authorized at once)",
    )
    gen.add_argument(
        "--dir",
        type=Path,
        default=curve.default_dir(),
        help="key folder (default %(default)s); `brushwork serve --keys DIR` reads it",
    )
    gen.add_argument(
        "--client",
        metavar="NAME",
        help="make a client key pair NAME in DIR/clients and authorize it: from then on only "
        "authorized clients get in",
    )
    gen.add_argument("--force", action="store_true", help="replace existing keys")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.client is None:
        public, secret = curve.generate(args.dir, force=args.force)
        print(f"server secret key: {secret} (stays here)", file=sys.stderr)
        print(f"server public key: {public} (give it to clients: --server-key)", file=sys.stderr)
        return 0
    public, secret = curve.generate(args.dir / "clients", args.client, force=args.force)
    allowed = args.dir / curve.AUTHORIZED_DIR
    allowed.mkdir(parents=True, exist_ok=True)
    shutil.copy(public, allowed / public.name)
    print(f"client secret key: {secret} (give it to that client: --client-key)", file=sys.stderr)
    print(f"authorized: {allowed / public.name} (restart the daemon to apply)", file=sys.stderr)
    return 0
