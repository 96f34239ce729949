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


@pytest.mark.parametrize("kind", ["w2", "sw"])
def test_gradient_in_bf16_stays_in_bf16_and_close(kind):
    loss = losses.STYLE_LOSSES[kind]
    t = loss.target(loss.describe(torch.rand(1, 16, 8, 8)))
    a32 = torch.rand(1, 16, 8, 8).bfloat16().float().requires_grad_(True)
    a16 = a32.detach().bfloat16().requires_grad_(True)
    for a in (a32, a16):
        loss(t, a, 3.0).backward()
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
    part = flat[:, mine.flatten()][None, :, None].clone().requires_grad_(True)  # 1 x n map
    rest = loss.rest(loss.describe(whole.detach()), 36, part.detach())

    expected = loss(target, whole, 0.7)
    expected.backward()
    got = loss(target, part, 0.7, rest)
    got.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)
    assert torch.allclose(part.grad[0, :, 0], whole.grad.flatten(2)[0][:, mine.flatten()])
    assert torch.autograd.gradcheck(
        lambda a: loss(target, a, 0.7, rest), (part.detach().requires_grad_(True),)
    )


SW = losses.STYLE_LOSSES["sw"]


def _sw_target(a: torch.Tensor) -> losses.SlicedTarget:
    return SW.target(SW.describe(a))


def test_directions_are_a_fixed_rotation():
    d = losses.directions(6)
    assert torch.allclose(d.T @ d, torch.eye(6), atol=1e-6)
    assert torch.equal(d, losses.directions(6))
    assert not torch.allclose(d.abs(), torch.eye(6))


def test_sliced_loss_in_one_channel_is_the_distance_between_sorted_samples():
    """One channel, one direction (+1 or -1): SW = 1/N sum_i (sort(g)_i - sort(s)_i)^2."""
    s = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64).view(1, 1, 2, 2)
    g = torch.tensor([8.0, 0.0, 4.0, 4.0], dtype=torch.float64).view(1, 1, 2, 2)
    expected = (g.flatten().sort().values - s.flatten().sort().values).pow(2).mean()
    assert SW(_sw_target(s), g, 1.0).item() == pytest.approx(expected.item(), rel=1e-12)
    assert SW.scale(_sw_target(s)) == pytest.approx(SW.GAIN / s.pow(2).mean().item())


def test_sliced_loss_is_zero_for_the_same_distribution_and_positive_otherwise():
    """Shuffled positions are the same distribution; so is W2's Gaussian twin of a skewed
    sample, which the sliced loss tells apart (W2 does not)."""
    a_s = torch.rand(1, 6, 5, 7, dtype=torch.float64).pow(4)  # skewed, as ReLU activations
    t = _sw_target(a_s)
    shuffled = a_s.flatten(2)[..., torch.randperm(35)].view_as(a_s)
    assert abs(SW(t, shuffled, 1.0).item()) < 1e-12
    m = losses.moments(a_s)
    root = losses.sqrtm(m.covariance())
    gaussian = (root @ torch.randn(6, 4000, dtype=torch.float64) + m.mean[:, None]).view(
        1, 6, 40, 100
    )
    assert abs(W2(_w2_target(a_s), gaussian, 1.0).item()) < 0.05 * W2.scale(_w2_target(a_s)) ** -1
    assert SW(t, gaussian, 1.0).item() * SW.scale(t) > 10 * W2(
        _w2_target(a_s), gaussian, 1.0
    ).item() * W2.scale(_w2_target(a_s))


def test_sliced_gradient_is_autograds():
    t = _sw_target(torch.rand(1, 4, 3, 5, dtype=torch.float64))
    a_g = torch.rand(1, 4, 6, 5, dtype=torch.float64, requires_grad=True)  # another count
    assert torch.autograd.gradcheck(lambda a: SW(t, a, 0.7), (a_g,))


def test_marginals_keep_at_most_quantiles_and_mix_by_weight(monkeypatch):
    """A large sample is kept as QUANTILES evenly spaced quantiles; two samples mixed with
    weights in proportion to their counts have the marginals of the two pooled."""
    monkeypatch.setattr(losses, "QUANTILES", 64)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 3, 10, 30, dtype=torch.float64, generator=g)
    b = torch.randn(1, 3, 10, 10, dtype=torch.float64, generator=g) * 3 + 2
    pooled = losses.marginals(torch.cat([a.flatten(2), b.flatten(2)], 2)[..., None])
    mixed = losses.mixture([(losses.marginals(a), 0.75), (losses.marginals(b), 0.25)])
    assert pooled.values.shape == mixed.values.shape == (3, 64)
    spread = (pooled.values[:, -1] - pooled.values[:, 0]).max()
    assert (pooled.values - mixed.values).abs().max() < 0.05 * spread
    assert torch.equal(pooled.at(64), pooled.values)
    assert (pooled.values.diff(dim=1) >= 0).all()


def test_marginals_without_a_part_are_the_rests():
    """The rest of an image kept in full is exactly the marginals of the positions left;
    sketched in fewer quantiles, within about a quantile's step of them."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 3, 8, 50, dtype=torch.float64, generator=g).exp()  # skewed
    flat = a.flatten(2)
    part, others = flat[..., :120, None], flat[..., 120:, None]
    whole = losses.marginals(a)
    got = whole.without(400, losses.projections(part))
    assert torch.allclose(got.values, losses.marginals(others).values, atol=1e-4)
    levels = torch.rand(3, 50, dtype=torch.float64, generator=g)
    v = whole.quantile(levels)
    got = whole.levels(v, torch.searchsorted(whole.values, v))
    assert torch.allclose(got, levels.clamp(0.5 / 400, 1 - 0.5 / 400))


def test_marginals_without_a_part_when_sketched(monkeypatch):
    monkeypatch.setattr(losses, "QUANTILES", 64)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(1, 3, 20, 50, dtype=torch.float64, generator=g).exp()
    flat = a.flatten(2)
    part, others = flat[..., :300, None], flat[..., 300:, None]
    got = losses.marginals(a).without(1000, losses.projections(part)).values
    want = losses.marginals(others).values
    spread = (want[:, -1] - want[:, 0]).max()
    assert got.shape == want.shape
    assert (got - want).abs().median() < 0.01 * spread


def test_a_part_under_the_sliced_loss_takes_its_share_of_the_whole_images():
    """A tile's sliced loss with the rest of the image ranks its projections among the
    whole image's: its gradient is the whole image's at its positions (within the half a
    position the rest's interpolated count can be off), where the part alone is far from it;
    the parts' losses add up to the whole's."""
    g = torch.Generator().manual_seed(0)
    t = _sw_target(torch.rand(1, 6, 9, 11, dtype=torch.float64, generator=g).pow(3))
    whole = torch.rand(1, 6, 10, 30, dtype=torch.float64, generator=g, requires_grad=True)
    expected = SW(t, whole, 0.7)
    expected.backward()
    flat, grad = whole.detach().flatten(2), whole.grad.flatten(2)
    total, off, alone_off = 0.0, 0.0, 0.0
    for i in (slice(0, 110), slice(110, 300)):
        part = flat[..., i, None].clone().requires_grad_(True)
        got = SW(t, part, 0.7, SW.rest(SW.describe(whole.detach()), 300, part.detach()))
        got.backward()
        total += got.item()
        off = max(off, (part.grad[..., 0] - grad[..., i]).norm() / grad[..., i].norm())
        alone = part.detach().requires_grad_(True)
        SW(t, alone, 0.7).backward()
        alone_off = max(
            alone_off,
            (alone.grad[..., 0] * 300 / alone.shape[-2] - grad[..., i]).norm()
            / grad[..., i].norm(),
        )
    assert total == pytest.approx(expected.item(), rel=0.02)
    assert off < 0.05 < 0.2 < alone_off


def test_host_sort_orders_float32_rows_of_any_sign():
    """The host sorts float32 rows as int64 keys made from the floats' bits: negative,
    positive, zero of either sign and ties come out in ascending order, and rows of ascending
    runs (blended quantiles) merge to the same order."""
    g = torch.Generator().manual_seed(0)
    p = torch.randn(5, 300, generator=g) * torch.tensor([1e-30, 1e-3, 1.0, 1e3, 1e30])[:, None]
    p[:, :40] = torch.tensor([0.0, -0.0, 2.5, -2.5]).repeat(10)
    runs = torch.cat([p[:, :150].sort(dim=1).values, p[:, 150:].sort(dim=1).values], dim=1)
    for rows in (p, runs):  # the merge of ascending runs gives the same order
        order = losses._argsort_rows(rows)
        assert torch.equal(order.sort(dim=1).values, torch.arange(300).expand(5, -1))
        assert torch.equal(rows.gather(1, order), rows.sort(dim=1).values)
        assert torch.equal(losses._argsort_rows(rows, runs=True), order)


def test_radix_sort_gives_the_packed_sorts_order(monkeypatch):
    """The radix sort (the new path) and the int64 key sort (the old one) give the same
    order, ties by position, over blocks of rows (a small block: several per thread)."""
    g = torch.Generator().manual_seed(1)
    p = torch.randn(7, 500, generator=g) * torch.logspace(-30, 30, 7)[:, None]
    p[:, ::5] = torch.tensor([0.0, -0.0, 1.5, -1.5, 3e-39]).repeat(20)  # ties, zeros, subnormal
    monkeypatch.setattr(losses, "RADIX_BLOCK", 1000)
    expected = torch.from_numpy(losses._packed_argsort(p.numpy()))
    assert torch.equal(losses._argsort_rows(p), expected)
    assert torch.equal(torch.from_numpy(losses._radix_argsort(p.numpy())), expected)


def test_a_forked_child_sorts_with_its_own_threads():
    """The host's sort runs on a thread pool; a child forked after the parent used it (the
    pool's threads do not survive a fork) sorts as well."""
    import multiprocessing

    p = torch.rand(4, 50)
    with torch.no_grad():
        expected = losses._argsort_rows(p)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(losses._argsort_rows, (p,)).get(timeout=60)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("kind", ["gram", "w2", "sw"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_activations_get_the_same_loss_and_gradient_in_their_layout(kind, dtype):
    """The engine's activations are channels_last in bf16 and on CUDA: the loss reads them
    without a copy and writes their gradient in that layout (no reorder in the convolution's
    backward), with the values of the contiguous path (the old one)."""
    loss = losses.STYLE_LOSSES[kind]
    g = torch.Generator().manual_seed(3)
    target = loss.target(loss.describe(torch.rand(1, 16, 9, 11, generator=g)))
    a = torch.rand(1, 16, 12, 10, generator=g).to(dtype)
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        x = a.contiguous(memory_format=layout).detach().requires_grad_(True)
        value = loss(target, x, 2.0)
        value.backward()
        assert x.grad.dtype == dtype and x.grad.is_contiguous(memory_format=layout)
        results.append((value.detach(), x.grad.float()))
    (v0, g0), (v1, g1) = results
    assert torch.allclose(v0, v1, rtol=1e-5)
    assert torch.allclose(g0, g1, rtol=1e-2, atol=1e-3 * g0.abs().max().item())
