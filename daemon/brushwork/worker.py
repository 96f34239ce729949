"""The daemon's worker side: run one job on the Engine and turn whatever happens into a reply.

Runs on a worker's thread (pool.py) or in a Ray actor (ray_pool.py); it never touches a socket,
it only calls `emit` with messages.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable

import torch

from brushwork import pixels, protocol
from brushwork.engine import Cancelled, Engine, Progress, Result
from brushwork.errors import BrushworkError
from brushwork.jobs import Cancel, job_error
from brushwork.protocol import (
    ErrorReply,
    Message,
    PreviewReply,
    ProgressReply,
    ResultReply,
    SubmitRequest,
)
from brushwork.scales import output_size
from brushwork.settings import Temporal

log = logging.getLogger("brushwork.server")
GPU_PROGRESS_EVERY = 10
# What a ProgressReply takes from the engine's Progress as it is (losses are made finite).
_PROGRESS_FIELDS = (
    "iteration", "total", "elapsed", "eta", "level", "levels", "step", "steps", "fraction"
)  # fmt: skip


def run_job(
    engine: Engine,
    request: SubmitRequest,
    emit: Callable[[Message], None],
    cancel: Cancel,
    queued: float = 0.0,
    interlude: Callable[[], None] | None = None,
) -> ResultReply | ErrorReply:
    """Run one job on the engine; every failure becomes an ErrorReply (the worker lives).
    `queued`: seconds the job waited, for the result. `interlude`: called between steps,
    after each progress report (the pool runs previews there, pool.py)."""
    job = request.job
    done = 0

    def on_progress(p: Progress) -> None:
        nonlocal done
        done = p.iteration
        same = {name: getattr(p, name) for name in _PROGRESS_FIELDS}
        emit(ProgressReply(job=job, losses=_finite(p.losses), **same))
        if p.preview is not None:
            emit(
                PreviewReply(
                    job=job,
                    iteration=p.iteration,
                    image=pixels.from_float(p.preview, "u8"),  # long side <= preview_size
                )
            )
        if interlude is not None:
            interlude()

    try:
        result = _stylize(engine, request)(
            pixels.to_array(request.content),
            [pixels.to_array(s) for s in request.styles],
            request.settings,
            init_image=pixels.to_array(request.init) if request.init else None,
            progress=on_progress,
            # A GPU runs 100+ iterations a second: a report (a host sync and a message) every
            # 10th keeps the client's bar live at a fraction of the cost. Cancel is still
            # checked every iteration.
            progress_every=GPU_PROGRESS_EVERY if engine.device.type == "cuda" else 1,
            preview_every=request.preview_every,
            preview_side=request.preview_size,
            cancel=cancel,
        )
        image = pixels.from_float(result.image, request.output_dtype or request.content.dtype)
    except Cancelled:
        return job_error(
            job, protocol.CANCELLED, f"job {job} {cancel.reason} after {done} iterations"
        )
    except (torch.OutOfMemoryError, MemoryError) as e:
        return _out_of_memory(engine, request, e)
    except RuntimeError as e:
        if "can't allocate memory" in str(e) or "out of memory" in str(e):  # CPU allocator
            return _out_of_memory(engine, request, e)
        log.exception("job %s failed", job)
        return job_error(job, protocol.INTERNAL, f"job {job} failed: {one_line(e)}")
    except ValueError as e:
        return job_error(job, protocol.BAD_INPUT, one_line(e))
    except BrushworkError as e:
        return job_error(job, protocol.JOB_FAILED, one_line(e))
    except Exception as e:
        log.exception("job %s failed", job)
        return job_error(job, protocol.INTERNAL, f"job {job} failed: {one_line(e)}")
    return ResultReply(
        job=job,
        image=image,
        iterations=result.iterations,
        losses=_finite(result.losses),
        elapsed=result.elapsed,
        queued=queued,
        settings=result.settings,
        device=result.device,
    )


def _stylize(engine: Engine, request: SubmitRequest) -> Callable[..., Result]:
    """Engine.stylize, or for a clip's frame (previous frames given) temporal.stylize_frame
    with them: the same arguments, the same Result."""
    if not request.previous:
        return engine.stylize
    from brushwork import temporal

    try:  # OpenCV (DIS optical flow), which flow.py imports only when a frame needs it
        import cv2  # noqa: F401
    except ModuleNotFoundError as e:  # the video extra is missing
        raise BrushworkError(
            f"this daemon cannot style a clip's frames: {e.name} is missing (install the video"
            ' extra where the daemon runs: pip install "brushwork[video]")'
        ) from None
    settings = request.temporal or Temporal()
    previous = [
        temporal.Previous(pixels.to_array(frame), pixels.to_array(result), offset)
        for frame, result, offset in zip(
            request.previous, request.previous_results, settings.offsets, strict=False
        )
    ]
    return functools.partial(temporal.stylize_frame, engine, previous=previous, temporal=settings)


def _out_of_memory(engine: Engine, request: SubmitRequest, error: BaseException) -> ErrorReply:
    if engine.device.type == "cuda":
        torch.cuda.empty_cache()
    h, w = output_size(request.content.height, request.content.width, request.settings.size)
    log.warning("job %s ran out of memory: %s", request.job, one_line(error))
    return job_error(
        request.job,
        protocol.OUT_OF_MEMORY,
        f"out of memory on {engine.device} for a {w}x{h} output; lower the size, or force "
        "tiling with a smaller tile",
    )


def _finite(losses: dict[str, float]) -> dict[str, float | None]:
    return {k: v if math.isfinite(v) else None for k, v in losses.items()}


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
