"""Every loss against a value computed independently (by hand or with a second formula)."""
import math
import re

import pytest
import torch
import torch.nn.functional as F

from textdistill import TextDistillError
from textdistill.knowledge.losses import get_loss, kd_kl, mse, pkd_mse, soft_ce


def _softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


S = [[1.0, 2.0, 0.5], [0.0, -1.0, 1.0]]
T = [[2.0, 1.0, 0.0], [0.5, 0.5, 3.0]]


def _hand_kl(temperature):
    """sum_c p_t log(p_t / p_s), averaged over the 2 examples, times T^2 -- plain Python."""
    total = 0.0
    for s, t in zip(S, T):
        ps = _softmax([x / temperature for x in s])
        pt = _softmax([x / temperature for x in t])
        total += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    return total / len(S) * temperature ** 2


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_kd_kl_matches_hand_computation(temperature):
    got = kd_kl(torch.tensor(S), torch.tensor(T), temperature=temperature)
    assert got.item() == pytest.approx(_hand_kl(temperature), rel=1e-5)


def test_kd_kl_worked_example():
    # two classes, one example, T = 2: s = [0, 0] -> p_s = [.5, .5]; t = [2 ln 3, 0] -> p_t = [.75, .25]
    # KL = .75 ln(1.5) + .25 ln(.5) = 0.130812035; times T^2 = 4 -> 0.52324814
    got = kd_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[2 * math.log(3.0), 0.0]]), temperature=2.0)
    assert got.item() == pytest.approx(0.52324814, abs=1e-6)


@pytest.mark.filterwarnings("ignore:reduction")
def test_kd_kl_is_batchmean_not_elementwise_mean():
    s, t = torch.tensor(S), torch.tensor(T)
    batchmean = kd_kl(s, t, temperature=1.0)
    elementwise = F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="mean")
    assert batchmean.item() == pytest.approx(elementwise.item() * 3, rel=1e-6)  # 3 classes


def test_kd_kl_zero_when_equal_and_t2_scaling():
    x = torch.tensor(S)
    assert kd_kl(x, x.clone(), temperature=4.0).item() == pytest.approx(0.0, abs=1e-7)
    # the T^2 factor: KL at temperature T without scaling equals kd_kl / T^2
    s, t = torch.tensor(S), torch.tensor(T)
    raw = F.kl_div(F.log_softmax(s / 3, -1), F.softmax(t / 3, -1), reduction="batchmean")
    assert kd_kl(s, t, temperature=3.0).item() == pytest.approx(9 * raw.item(), rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 5.0])
def test_soft_ce_equals_kl_plus_teacher_entropy(temperature):
    s, t = torch.tensor(S), torch.tensor(T)
    entropy = 0.0
    for row in T:
        p = _softmax([x / temperature for x in row])
        entropy -= sum(v * math.log(v) for v in p)
    entropy /= len(T)
    expected = _hand_kl(temperature) + entropy * temperature ** 2
    assert soft_ce(s, t, temperature=temperature).item() == pytest.approx(expected, rel=1e-5)
    assert soft_ce(s, t, temperature=temperature, t2=False).item() == pytest.approx(
        expected / temperature ** 2, rel=1e-5)


def test_soft_ce_and_kd_kl_have_the_same_gradient():
    s1 = torch.tensor(S, requires_grad=True)
    s2 = torch.tensor(S, requires_grad=True)
    t = torch.tensor(T)
    soft_ce(s1, t, temperature=3.0).backward()
    kd_kl(s2, t, temperature=3.0).backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-6)


def test_pkd_mse_by_hand():
    # one example, two layers, dim 2
    s = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])  # normalised: [.6, .8], [1, 0]
    t = torch.tensor([[[0.0, 2.0], [0.0, 5.0]]])  # normalised: [0, 1], [0, 1]
    # squared differences: layer 1: .36 + .04 = .40; layer 2: 1 + 1 = 2.0
    assert pkd_mse(s, t, reduction="sum").item() == pytest.approx(2.4, rel=1e-6)
    assert pkd_mse(s, t, reduction="mean").item() == pytest.approx(2.4 / 4, rel=1e-6)


def test_pkd_mse_sum_is_mean_over_batch_and_equals_2_minus_2cos():
    torch.manual_seed(0)
    s, t = torch.randn(5, 3, 8), torch.randn(5, 3, 8)
    cos = F.cosine_similarity(s, t, dim=-1)  # (5, 3)
    expected = (2 - 2 * cos).sum(-1).mean()
    assert pkd_mse(s, t, reduction="sum").item() == pytest.approx(expected.item(), rel=1e-5)
    assert pkd_mse(s, t).item() == pytest.approx((2 - 2 * cos).mean().item() / 8, rel=1e-5)
    assert pkd_mse(3 * s, 0.5 * s).item() == pytest.approx(0.0, abs=1e-7)  # scale-invariant


def test_mse_by_hand():
    assert mse(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]])).item() == pytest.approx(2.5)


def test_bad_loss_inputs():
    with pytest.raises(TextDistillError, match="unknown loss 'kld'"):
        get_loss("kld")
    with pytest.raises(TextDistillError, match="temperature must be positive"):
        kd_kl(torch.tensor(S), torch.tensor(T), temperature=0)
    with pytest.raises(TextDistillError, match="reduction"):
        pkd_mse(torch.ones(1, 1, 2), torch.ones(1, 1, 2), reduction="avg")


def test_pkd_authors_reduction_averages_over_classes_too():
    """PKD's code: nn.KLDivLoss(reduction='mean') * T^2 -- the mean over examples and classes."""
    torch.manual_seed(0)
    s, t = torch.randn(6, 3), torch.randn(6, 3)
    T = 4.0
    p, log_q = torch.softmax(t / T, -1), torch.log_softmax(s / T, -1)
    per_element = p * (p.log() - log_q)
    assert kd_kl(s, t, temperature=T, reduction="mean").item() == pytest.approx(per_element.mean().item() * T * T,
                                                                                 rel=1e-5)
    assert kd_kl(s, t, temperature=T, reduction="mean").item() == pytest.approx(
        kd_kl(s, t, temperature=T).item() / 3, rel=1e-5)
    ce = -(p * log_q).sum(-1).mean()
    assert soft_ce(s, t, temperature=T, reduction="mean").item() == pytest.approx(ce.item() / 3 * T * T, rel=1e-5)
    with pytest.raises(TextDistillError, match="reduction must be"):
        kd_kl(s, t, reduction="sum")


def test_mse_on_sequences_averages_over_real_tokens_only():
    torch.manual_seed(1)
    s, t = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    s, t = s * mask[:, None, :, None], t * mask[:, None, :, None]  # taps zero the padding, as tap_layers does
    real = [(b, layer, i) for b in range(2) for layer in range(3) for i in range(5) if mask[b, i]]
    expected = sum(((s[b, layer, i] - t[b, layer, i]) ** 2).sum() for b, layer, i in real) / (len(real) * 4)
    assert mse(s, t, mask=mask).item() == pytest.approx(expected.item(), rel=1e-5)
    assert mse(s, t).item() < expected.item()  # the plain mean counts the zeroed padding positions


@pytest.mark.parametrize("loss,args,needle", [
    ("kd_kl", {"temperature": 0}, "t.args.temperature: temperature must be positive, got 0"),
    ("soft_ce", {"temperature": "5"}, "t.args.temperature: temperature must be positive, got '5'"),
    ("soft_ce", {"t2": "yes"}, "t.args.t2: must be true or false, got 'yes'"),
    ("kd_kl", {"reduction": "sum"}, "t.args.reduction: reduction must be 'batchmean'"),
    ("pkd_mse", {"reduction": "batchmean"}, "t.args.reduction: pkd_mse: reduction must be 'mean' or 'sum'"),
    ("infonce", {"temperature": -1.0}, "t.args.temperature: temperature must be positive"),
])
def test_loss_arguments_checked_by_value_at_recipe_time(loss, args, needle):
    from textdistill.knowledge.losses import check_arguments

    with pytest.raises(TextDistillError, match=re.escape(needle)):
        check_arguments(loss, args, "t")
    check_arguments(loss, {}, "t")  # (the defaults are fine)

