"""`brushwork cancel JOB --token TOKEN`: stop a queued or running job on the daemon.

A job belongs to the client that submitted it; another process cancels it with the job's token
(the secret its submitter received; `Client.token(job)`). The user who runs the daemon may
cancel any job: the daemon leaves its operator token where this command finds it."""

from __future__ import annotations

import argparse
import sys
import time

from brushwork.errors import BrushworkError
from brushwork.protocol import FINISHED_STATES
from brushwork.remote import add_server_arguments, client_from_args, operator_token

WAIT = 30.0  # a running job stops within one iteration; this bounds a very slow one


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cancel",
        help="cancel a job on the daemon",
        description="Cancel a queued or running job on the daemon and wait until it has "
        "stopped (a running job stops within one step). A job is its submitter's: from "
        "another process give its token too (the line `brushwork stylize` prints has both), "
        "unless you run the daemon (then any job).",
    )
    p.add_argument("job", help="job id")
    p.add_argument(
        "--token",
        help="the job's token: only the job's submitter has it (it proves the job is yours)",
    )
    add_server_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with client_from_args(args, timeout=3.0) as client:
        args.token = args.token or operator_token(client.endpoint)
        status = client.status(args.job, args.token)
        if status.state in FINISHED_STATES:
            print(f"brushwork: job {args.job} had already ended ({status.state})", file=sys.stderr)
            return 0
        status = client.cancel(args.job, args.token)
        deadline = time.monotonic() + WAIT
        while status.state not in FINISHED_STATES:
            if time.monotonic() > deadline:
                raise BrushworkError(f"job {args.job} did not stop within {WAIT:g} s")
            time.sleep(0.1)
            status = client.status(args.job, args.token)
    outcome = "cancelled" if status.state == "cancelled" else f"ended first ({status.state})"
    print(f"brushwork: job {args.job} {outcome}", file=sys.stderr)
    return 0
