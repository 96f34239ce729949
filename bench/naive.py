"""The textbook algorithm of the seed (Gatys et al. 2015), written plainly: the reference that
the benchmark measures Brushwork against.

fp32, one scale, torch.optim.LBFGS (one function evaluation per step, no line search, the same
history length as the engine), targets computed for this one run, no caching, no mixed
precision, no channels_last, PyTorch's default backend flags. Only the VGG16 network comes from
Brushwork (brushwork.vgg, the same weights); the cost is coded here from the seed's equations:

    Jc      = 1/2 ||a(C) - a(G)||^2                        (content layer)
    G[k,m]  = sum_ij a[i,j,k] a[i,j,m]                      (Gram, unnormalised)
    Js[l]   = 1/(2 nH nW nC)^2 sum_km (G_S[k,m] - G_G[k,m])^2
    J(G)    = alpha Jc + sum_l beta_l Js[l] + tv TV(G)

The style image must have the content's size (the seed's Js[l] assumes one nH, nW for both).
The weights alpha, beta_l are the engine's settings translated into the seed's raw units:
alpha = content_weight / Jc(C, 0) and beta_l = style_weight * lambda_l / Js[l](S, 0). Both
programs then minimise the same function J of the image, and "equal final loss" compares like
with like (see evaluate.py for the one loss function that scores both results).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from brushwork.settings import Settings
from brushwork.vgg import VGGFeatures


def gram(a: torch.Tensor) -> torch.Tensor:
    _, n_c, n_h, n_w = a.shape
    f = a.reshape(n_c, n_h * n_w)
    return f @ f.T


def content_cost(a_c: torch.Tensor, a_g: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((a_c - a_g) ** 2).sum()


def style_layer_cost(g_s: torch.Tensor, g_g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    _, n_c, n_h, n_w = shape
    return ((g_s - g_g) ** 2).sum() / (2 * n_h * n_w * n_c) ** 2


def tv_cost(x: torch.Tensor) -> torch.Tensor:
    """The engine's total-variation term, so that both minimise the same J."""
    dh = ((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean()
    dw = ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean()
    return dh + dw


@dataclass
class NaiveRun:
    image: torch.Tensor  # (1, 3, H, W) in [0, 1]
    iterations: int
    elapsed: float  # seconds to `image`, targets included
    loss: float  # J of `image`
    reached: bool  # J <= target before the caps


def stylize(
    model: VGGFeatures,
    content: torch.Tensor,
    style: torch.Tensor,
    settings: Settings,
    *,
    target: float = 0.0,
    max_iterations: int = 100_000,
    time_cap: float = float("inf"),
    history: int = 50,
    on_step: Callable[[int, float, float], None] | None = None,
) -> NaiveRun:
    """Minimise J from the content image until J <= target, max_iterations or time_cap (s).

    J of the image after step k is known from the next step's evaluation, so the result is
    the image whose J was last seen, and its time is the time it was made."""
    start = time.perf_counter()
    layers = {settings.content_layer, *settings.style_layers}
    with torch.no_grad():
        a_c = model(content, {settings.content_layer})[settings.content_layer]
        style_acts = model(style, set(settings.style_layers))
    grams_s = {name: gram(a) for name, a in style_acts.items()}
    alpha = settings.content_weight / content_cost(a_c, torch.zeros_like(a_c))
    beta = {
        name: settings.style_weight
        * lam
        / style_layer_cost(grams_s[name], torch.zeros_like(grams_s[name]), style_acts[name].shape)
        for name, lam in zip(settings.style_layers, settings.layer_weights(), strict=True)
    }

    def cost(x: torch.Tensor) -> torch.Tensor:
        acts = model(x, layers)
        j = alpha * content_cost(a_c, acts[settings.content_layer])
        for name, b in beta.items():
            j = j + b * style_layer_cost(grams_s[name], gram(acts[name]), acts[name].shape)
        return j + settings.tv_weight * tv_cost(x)

    x = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=history)
    best = x.detach().clone()
    made_at, k = time.perf_counter() - start, 0
    seen: list[float] = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        j = cost(x)
        j.backward()
        seen.append(float(j.detach()))
        return j

    while True:
        opt.step(closure)
        loss = seen[-1]  # J of the image made by the previous step
        if on_step is not None:
            on_step(k, loss, made_at)
        if loss <= target or k >= max_iterations or made_at >= time_cap:
            return NaiveRun(best, k, made_at, loss, loss <= target)
        with torch.no_grad():
            x.clamp_(0, 1)
        best = x.detach().clone()
        k += 1
        made_at = time.perf_counter() - start
