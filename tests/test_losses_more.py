"""Intermediate-layer, attention, relation and contrastive losses against independent computations:
plain loops in numpy / Python over the same small tensors, or hand-worked numbers."""
import itertools
import math

import numpy as np
import pytest
import torch

from textdistill import TextDistillError
from textdistill.knowledge.losses import (attention_kl, attention_mse, cosine, fsp, infonce, mse, rkd_angle,
                                          rkd_distance)
from textdistill.knowledge.terms import alp_target

rng = np.random.default_rng(0)


def _t(a):
    return torch.tensor(a, dtype=torch.float64)


def test_cosine_worked_example_and_mask():
    s = _t([[[1.0, 0.0]], [[1.0, 1.0]]])  # (batch 2, layers 1, dim 2)
    t = _t([[[0.0, 1.0]], [[1.0, 1.0]]])
    assert cosine(s, t).item() == pytest.approx((1 - 0 + 1 - 1) / 2)  # orthogonal, then equal
    # sequences: padding tokens must not count
    s = _t(rng.normal(size=(2, 1, 3, 4)))
    t = _t(rng.normal(size=(2, 1, 3, 4)))
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    want = []
    for b, l in [(0, 0), (0, 1), (1, 0)]:
        u, v = s[b, 0, l].numpy(), t[b, 0, l].numpy()
        want.append(1 - u @ v / np.linalg.norm(u) / np.linalg.norm(v))
    assert cosine(s, t, mask=mask).item() == pytest.approx(np.mean(want))


def _attn(batch, layers, heads, seq):
    a = rng.random(size=(batch, layers, heads, seq, seq))
    return a / a.sum(-1, keepdims=True)


def test_attention_losses_over_real_tokens_only():
    s, t = _attn(2, 2, 3, 4), _attn(2, 2, 3, 4)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    t = t * mask[:, None, None, None, :]  # a teacher gives padding keys probability 0
    t = t / t.sum(-1, keepdims=True)
    sq, kl, n_sq, n_kl = 0.0, 0.0, 0, 0
    for b, k, h in itertools.product(range(2), range(2), range(3)):
        n = mask[b].sum()
        for q in range(n):
            for key in range(n):
                sq += (s[b, k, h, q, key] - t[b, k, h, q, key]) ** 2
                n_sq += 1
            kl += sum(t[b, k, h, q, key] * math.log(t[b, k, h, q, key] / s[b, k, h, q, key]) for key in range(n))
            n_kl += 1
    m = torch.tensor(mask)
    assert attention_mse(_t(s), _t(t), mask=m).item() == pytest.approx(sq / n_sq)
    assert mse(_t(s), _t(t), mask=m).item() == pytest.approx(sq / n_sq)  # (plain mse on attention maps: the same)
    assert attention_kl(_t(s), _t(t), mask=m).item() == pytest.approx(kl / n_kl)
    assert attention_kl(_t(t), _t(t), mask=m).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(TextDistillError, match="3 attention heads, the teacher 2"):
        attention_mse(_t(s), _t(t[:, :, :2]))


def test_fsp_against_loops():
    s, t = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))  # batch, layers, seq, dim
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    s, t = s * mask[:, None, :, None], t * mask[:, None, :, None]  # taps zero padding positions
    total, count = 0.0, 0
    for b in range(2):
        n = mask[b].sum()
        for k in range(2):  # layer pairs (0,1), (1,2)
            gs = np.zeros((5, 5))
            gt = np.zeros((5, 5))
            for i, j in itertools.product(range(5), range(5)):
                gs[i, j] = sum(s[b, k, x, i] * s[b, k + 1, x, j] for x in range(n)) / n
                gt[i, j] = sum(t[b, k, x, i] * t[b, k + 1, x, j] for x in range(n)) / n
            total += ((gs - gt) ** 2).sum()
            count += 25
    assert fsp(_t(s), _t(t), mask=torch.tensor(mask)).item() == pytest.approx(total / count)
    with pytest.raises(TextDistillError, match="at least 2 layers"):
        fsp(_t(s[:, :1]), _t(t[:, :1]))


def _huber(x, y):
    d = abs(x - y)
    return 0.5 * d * d if d < 1 else d - 0.5


def test_rkd_distance_against_loops():
    s, t = rng.normal(size=(4, 1, 3)), rng.normal(size=(4, 1, 6))  # widths differ: relations do not care

    def rel(x):
        d = np.array([[np.linalg.norm(x[i] - x[j]) for j in range(4)] for i in range(4)])
        return d / (d.sum() / 12)  # mean over the 12 off-diagonal pairs
    rs, rt = rel(s[:, 0]), rel(t[:, 0])
    want = np.mean([_huber(rs[i, j], rt[i, j]) for i in range(4) for j in range(4)])
    assert rkd_distance(_t(s), _t(t)).item() == pytest.approx(want)


def test_rkd_angle_against_loops():
    s, t = rng.normal(size=(4, 1, 3)), rng.normal(size=(4, 1, 5))

    def unit(v):
        n = np.linalg.norm(v)
        return v / n if n > 0 else v

    def angles(x):
        out = np.zeros((4, 4, 4))
        for i, j, k in itertools.product(range(4), repeat=3):
            out[j, i, k] = unit(x[i] - x[j]) @ unit(x[k] - x[j])  # cosine of the angle at x_j
        return out
    a_s, a_t = angles(s[:, 0]), angles(t[:, 0])
    want = np.mean([_huber(a, b) for a, b in zip(a_s.ravel(), a_t.ravel())])
    assert rkd_angle(_t(s), _t(t)).item() == pytest.approx(want)


def test_infonce_against_loops():
    s, t = rng.normal(size=(3, 2, 4)), rng.normal(size=(3, 2, 4))
    tau = 0.5
    total = 0.0
    for k in range(2):
        for i in range(3):
            sims = [s[i, k] @ t[j, k] / np.linalg.norm(s[i, k]) / np.linalg.norm(t[j, k]) / tau for j in range(3)]
            total += -sims[i] + math.log(sum(math.exp(x) for x in sims))
    assert infonce(_t(s), _t(t), temperature=tau).item() == pytest.approx(total / 6)
    # aligned views score lower than shuffled ones
    x = _t(rng.normal(size=(8, 1, 16)))
    assert infonce(x, x, temperature=0.1) < infonce(x, x[torch.randperm(8)], temperature=0.1)


def test_alp_target_worked_example():
    # one example, d = 4 (sqrt 2), student [1,1,0,0], teacher layers [1,1,0,0] and [0,0,1,1]
    # scores 2/2 = 1 and 0 -> weights e/(e+1), 1/(e+1)
    s = _t([[1.0, 1.0, 0.0, 0.0]])
    t = _t([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]])
    w = math.e / (math.e + 1)
    assert alp_target(s, t)[0].tolist() == pytest.approx([w, w, 1 - w, 1 - w])


def test_unmasked_forms_equal_a_mask_without_padding():
    """attention_mse, attention_kl and fsp called without a mask (the API; a term always passes one) equal the
    masked form with every token real."""
    g = torch.Generator().manual_seed(3)
    s_att = torch.rand(2, 3, 4, 5, 5, generator=g).softmax(-1)  # (batch, layers, heads, query, key)
    t_att = torch.rand(2, 3, 4, 5, 5, generator=g).softmax(-1)
    ones = torch.ones(2, 5, dtype=torch.long)
    for fn in (attention_mse, attention_kl):
        assert fn(s_att, t_att).item() == pytest.approx(fn(s_att, t_att, mask=ones).item(), rel=1e-6)
    s_h, t_h = torch.randn(2, 3, 5, 6, generator=g), torch.randn(2, 3, 5, 6, generator=g)  # (batch, layers, seq, dim)
    assert fsp(s_h, t_h).item() == pytest.approx(fsp(s_h, t_h, mask=ones).item(), rel=1e-6)
