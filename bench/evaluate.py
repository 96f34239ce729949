"""The one loss function that scores every result of the benchmark, whoever made it.

Brushwork's normalised total at the final size (brushwork.losses, fp32, no autocast):

    J = content_weight * Jc / Jc(C, 0)
      + style_weight * sum_l lambda_l Js[l] / Js[l](S, 0)
      + tv_weight * TV

It is the function both programs minimise (the naive one in raw units with translated weights,
see naive.py), it does not depend on the image size, and computing it in fp32 on the final
image keeps the engine's bf16 passes and multi-scale schedule out of the score: a result is
judged by its pixels, not by the numbers its own run reported.
"""

from __future__ import annotations

import torch

from brushwork import losses, weights
from brushwork.settings import Settings
from brushwork.vgg import VGGFeatures


def reference_model(weights_path: str | None, device: torch.device) -> VGGFeatures:
    """VGG16 in fp32, loaded afresh: an engine holds its copy in bf16 where it computes in
    bf16, and a score computed with rounded weights would flatter it."""
    model = VGGFeatures.from_weights(weights.load(weights.resolve_path(weights_path)))
    return model.to(device)


def loss_terms(
    model: VGGFeatures,
    content: torch.Tensor,
    style: torch.Tensor,
    image: torch.Tensor,
    settings: Settings,
) -> dict[str, float]:
    """Weighted terms content, style, tv and total of `image` (all (1, 3, H, W) in [0, 1])."""
    if model.features[0].weight.dtype != torch.float32:
        raise ValueError("scores are computed with fp32 weights: use reference_model()")
    s = settings
    layers = {s.content_layer, *s.style_layers}
    with torch.no_grad():
        a_c = model(content.float(), {s.content_layer})[s.content_layer]
        grams = {n: losses.gram(a) for n, a in model(style.float(), set(s.style_layers)).items()}
        acts = model(image.float(), layers)
        weights = {
            n: w * losses.style_scale(grams[n])
            for n, w in zip(s.style_layers, s.layer_weights(), strict=True)
        }
        terms = {
            "content": s.content_weight
            * losses.content_scale(a_c)
            * float(losses.content_loss(a_c, acts[s.content_layer])),
            "style": s.style_weight * float(losses.style_loss("gram", grams, acts, weights)),
            "tv": s.tv_weight * float(losses.tv_loss(image.float())),
        }
    terms["total"] = sum(terms.values())
    return terms
