"""`brushwork info`: the daemon's version, device, memory, weights, limits and job queue.

With --json, one JSON object on stdout; when no daemon answers (or it refuses), the object is
{"error": {"code": ..., "message": ...}} and the exit status says which (see brushwork --help).
"""

from __future__ import annotations

import argparse
import json
import time

from brushwork.client import DaemonError, NoDaemon
from brushwork.errors import BrushworkError
from brushwork.remote import add_server_arguments, client_from_args, operator_token


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info", help="show the daemon's device, memory, weights and queue", description=__doc__
    )
    add_server_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        with client_from_args(args, timeout=3.0) as client:
            # The user running the daemon sees every job by name; anyone else only theirs.
            info = client.info(operator_token(client.endpoint))
            endpoint = client.endpoint
    except BrushworkError as e:
        if not args.json:
            raise
        code = (
            e.code
            if isinstance(e, DaemonError)
            else "no_daemon"
            if isinstance(e, NoDaemon)
            else "error"
        )
        print(json.dumps({"error": {"code": code, "message": str(e)}}))
        return e.exit_code
    if args.json:
        print(
            json.dumps(
                {
                    "version": info.server,
                    "protocol": info.protocol,
                    "endpoint": endpoint,
                    "device": info.device,
                    "device_name": info.device_name,
                    "memory": info.memory,
                    "weights": info.weights,
                    "limits": {
                        "max_pixels": info.max_pixels,
                        "max_message_bytes": info.max_message_bytes,
                        "max_queue": info.max_queue,
                        "max_queue_bytes": info.max_queue_bytes,
                        "heartbeat_timeout": info.heartbeat_timeout,
                    },
                    "uptime": info.uptime,
                    "queue": info.queue,
                    "queue_bytes": info.queue_bytes,
                    "workers": info.workers,
                },
                indent=2,
            )
        )
        return 0
    memory = f"{_gib(info.memory.get('total'))} total"
    if info.memory.get("free") is not None:
        memory += f", {_gib(info.memory['free'])} free"
    print(f"brushwork daemon {info.server} at {endpoint} (protocol {info.protocol})")
    print(f"device   {info.device} ({info.device_name}), {memory}")
    print(f"weights  {info.weights}")
    print(
        f"limits   {info.max_pixels / 1e6:.1f} Mpx per image, {info.max_queue} jobs queued, "
        f"heartbeat timeout {info.heartbeat_timeout:g} s"
    )
    if info.max_queue_bytes:
        held = info.queue_bytes or 0
        print(f"images   {held / 1e6:.1f} of {info.max_queue_bytes / 1e6:.1f} MB held by the jobs")
    print(f"uptime   {info.uptime / 60:.0f} min")
    print(f"workers  {len(info.workers)}")
    for w in info.workers:
        where = f"{w['node']} pid {w['pid']}, {w['device']}" if w.get("pid") else ""
        doing = f"job {w['job']}" if w.get("job") else ""
        print(f"  {w['id']:<3} {w['state']:<8} {w['jobs_done']:>5} done  {where}  {doing}".rstrip())
    if not info.queue:
        print("queue    empty")
    for job in info.queue:
        name = job["id"] or "(another client's job)"  # the daemon names only our own jobs
        line = f"  {name:<34} {job['state']:<9}"
        if job["total"] is not None:  # only our own jobs' progress is shown
            line += f" {job['iteration']}/{job['total']}"
        if job["state"] == "queued":
            line += f"  position {job['position']}"
        elif job.get("finished") and job.get("started"):
            line += f"  {time.strftime('%H:%M:%S', time.localtime(job['finished']))}"
        if job.get("error"):
            line += f"  {job['error']}"
        print(line)
    return 0


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"
