"""`brushwork` subcommands, one module each.

Each module defines ``register(subparsers)``, which adds its parser and sets ``run`` as the
parser's default: ``run(args) -> int`` (exit status). Heavy imports stay inside ``run`` so that
``brushwork --help`` and the client-only commands start fast.
"""
