"""The loss terms against values computed by hand on tiny tensors."""

import pytest
import torch

from brushwork import losses

# One layer, nC = 2 channels, nH = 1, nW = 2: channel 0 = [1, 2], channel 1 = [3, 4].
A = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])


def test_content_loss_is_half_squared_distance():
    g = torch.tensor([[[[0.0, 2.0]], [[3.0, 6.0]]]])
    # 1/2 * ((1-0)^2 + 0 + 0 + (4-6)^2) = 2.5
    assert losses.content_loss(A, g).item() == pytest.approx(2.5)
    assert losses.content_loss(A, g, weight=2.0).item() == pytest.approx(5.0)


def test_content_scale_makes_the_loss_relative():
    assert losses.content_scale(A) == pytest.approx(1 / (0.5 * (1 + 4 + 9 + 16)))
    # A tile of a larger image: that image's energy per element, times the tile's elements.
    assert losses.content_scale(A, density=2.0) == pytest.approx(1 / (2.0 * A.numel()))


def test_gram_is_normalised_by_layer_size():
    # M = [[1*1+2*2, 1*3+2*4], [.., 3*3+4*4]] = [[5, 11], [11, 25]], / (nC nH nW = 4)
    expected = torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 4
    assert torch.allclose(losses.gram(A), expected)


def test_gram_does_not_depend_on_image_size():
    a = torch.randn(1, 8, 5, 7)
    tiled = a.repeat(1, 1, 2, 3)  # the same texture over a larger area
    assert torch.allclose(losses.gram(a), losses.gram(tiled), atol=1e-6)


def test_style_layer_loss_matches_the_seed_formula():
    a_s, a_g = torch.randn(1, 3, 4, 5), torch.randn(1, 3, 4, 5)
    _, n_c, n_h, n_w = a_s.shape
    raw = [torch.einsum("kij,mij->km", a[0], a[0]) for a in (a_s, a_g)]  # sum_ij a_ijk a_ijm
    seed = ((raw[0] - raw[1]) ** 2).sum() / (2 * n_h * n_w * n_c) ** 2
    ours = losses.style_layer_loss(losses.gram(a_s), a_g)
    assert ours.item() == pytest.approx(seed.item(), rel=1e-5)


def test_style_layer_gradient_is_autograds():
    """The hand-written gradient D F / N against finite differences, in float64."""
    gram_s = losses.gram(torch.randn(1, 3, 4, 5, dtype=torch.float64))
    a_g = torch.randn(1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: losses.style_layer_loss(gram_s, a, 0.7), (a_g,))


def test_style_layer_gradient_in_bf16_stays_in_bf16_and_close():
    """bf16 activations: the Gram and the loss in fp32, the gradient in bf16 (it flows into
    bf16 convolutions), within bf16's rounding of the fp32 gradient."""
    gram_s = losses.gram(torch.rand(1, 16, 8, 8))
    a32 = torch.rand(1, 16, 8, 8).bfloat16().float().requires_grad_(True)
    a16 = a32.detach().bfloat16().requires_grad_(True)
    loss32, loss16 = (losses.style_layer_loss(gram_s, a, 3.0) for a in (a32, a16))
    assert loss16.dtype == torch.float32 and torch.equal(loss16, loss32)
    loss32.backward()
    loss16.backward()
    assert a16.grad.dtype == torch.bfloat16
    assert torch.allclose(a16.grad.float(), a32.grad, rtol=2e-2, atol=1e-3 * a32.grad.abs().max())


def test_style_loss_weights_layers():
    acts = {"a": torch.randn(1, 2, 3, 3), "b": torch.randn(1, 4, 2, 2)}
    grams = {k: losses.gram(torch.randn_like(v)) for k, v in acts.items()}
    per_layer = {k: losses.style_layer_loss(grams[k], acts[k]).item() for k in acts}
    total = losses.style_loss("gram", grams, acts, {"a": 0.25, "b": 2.0}).item()
    assert total == pytest.approx(0.25 * per_layer["a"] + 2.0 * per_layer["b"], rel=1e-6)


def test_style_scale_is_the_inverse_target_energy():
    g = losses.gram(A)
    assert losses.style_scale(g) == pytest.approx(1 / (0.25 * float((g**2).sum())))
    # Relative to its own scale, G = 0 has style loss exactly 1.
    zero = torch.zeros_like(A)
    assert (losses.style_scale(g) * losses.style_layer_loss(g, zero)).item() == pytest.approx(1.0)


def test_tv_loss_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    # vertical: (2-0)^2, (4-1)^2 -> mean 6.5; horizontal: (1-0)^2, (4-2)^2 -> mean 2.5
    assert losses.tv_loss(x).item() == pytest.approx(9.0)


W2 = losses.STYLE_LOSSES["w2"]


def _w2_target(a: torch.Tensor) -> losses.Gaussian:
    return W2.target(losses.moments(a))


def test_moments_are_position_averages():
    m = losses.moments(A)
    assert torch.allclose(m.mean, torch.tensor([1.5, 3.5]))
    assert torch.allclose(m.second, torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 2)
    assert torch.allclose(losses.gram_of(m), losses.gram(A))


def test_w2_in_one_channel_is_the_distance_between_normals():
    """One channel: W2^2 = (mu_G - mu_S)^2 + (sigma_G - sigma_S)^2, variances regularised."""
    s = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64).view(1, 1, 2, 2)
    g = torch.tensor([0.0, 4.0, 4.0, 8.0], dtype=torch.float64).view(1, 1, 2, 2)
    t = _w2_target(s)
    var_s = s.var(unbiased=False) + t.delta
    var_g = g.var(unbiased=False) + t.delta
    expected = (g.mean() - s.mean()) ** 2 + (var_g.sqrt() - var_s.sqrt()) ** 2
    assert W2(t, g, 1.0).item() == pytest.approx(expected.item(), rel=1e-9)


def test_w2_is_zero_for_the_same_statistics_and_positive_otherwise():
    a_s = torch.rand(1, 6, 5, 7, dtype=torch.float64)
    t = _w2_target(a_s)
    shuffled = a_s.flatten(2)[..., torch.randperm(35)].view_as(a_s)  # same moments, new layout
    assert abs(W2(t, shuffled, 1.0).item()) < 1e-9
    assert W2(t, torch.rand_like(a_s), 2.0).item() > 1e-3


def test_w2_gradient_is_autograds():
    """The transport-map gradient 2/N ((I - T) X + mu_G - mu_S) against finite differences."""
    t = _w2_target(torch.rand(1, 4, 3, 5, dtype=torch.float64))
    a_g = torch.rand(1, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: W2(t, a, 0.7), (a_g,))


def test_w2_gradient_in_bf16_stays_in_bf16_and_close():
    t = _w2_target(torch.rand(1, 16, 8, 8))
    a32 = torch.rand(1, 16, 8, 8).bfloat16().float().requires_grad_(True)
    a16 = a32.detach().bfloat16().requires_grad_(True)
    for a in (a32, a16):
        W2(t, a, 3.0).backward()
    assert a16.grad.dtype == torch.bfloat16
    assert torch.allclose(a16.grad.float(), a32.grad, rtol=3e-2, atol=2e-2 * a32.grad.abs().max())


def test_w2_scale_is_the_inverse_second_moment_of_the_style():
    t = _w2_target(A)
    m = losses.moments(A)
    assert W2.scale(t) == pytest.approx(1 / float(m.second.trace()), rel=0.02)


@pytest.mark.parametrize("kind", ["gram", "w2"])
def test_a_part_with_the_rest_of_the_image_scores_as_the_whole(kind):
    """A tile's loss with the rest of the image (losses.Rest) is the whole image's loss, and
    its gradient the whole image's at the tile's positions: a tile is then optimised for the
    image's statistics, not asked to hold the style's whole distribution by itself."""
    loss = losses.STYLE_LOSSES[kind]
    g = torch.Generator().manual_seed(0)
    target = loss.target(losses.moments(torch.rand(1, 6, 5, 7, dtype=torch.float64, generator=g)))
    whole = torch.rand(1, 6, 4, 9, dtype=torch.float64, generator=g, requires_grad=True)
    mine = torch.zeros(4, 9, dtype=torch.bool)
    mine[1:3, 2:7] = True  # the tile's positions; the others are the rest
    flat = whole.detach().flatten(2)[0]
    others = flat[:, ~mine.flatten()][None, :, None]  # as a 1 x n activation map
    rest = losses.Rest(losses.moments(others) * others.shape[-1], count=36)
    part = flat[:, mine.flatten()][None, :, None].clone().requires_grad_(True)

    expected = loss(target, whole, 0.7)
    expected.backward()
    got = loss(target, part, 0.7, rest)
    got.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)
    assert torch.allclose(part.grad[0, :, 0], whole.grad.flatten(2)[0][:, mine.flatten()])
    assert torch.autograd.gradcheck(
        lambda a: loss(target, a, 0.7, rest), (part.detach().requires_grad_(True),)
    )
