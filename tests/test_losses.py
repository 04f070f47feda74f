"""Each loss against values worked out by hand on small tensors; the label loss sees only labelled rows of a batch
(`data.collate` marks the others)."""

import math

import pytest
import torch
import torch.nn.functional as F

from xdlib import losses
from xdlib.data import collate


def test_hidden_mse_by_hand_with_masking():
    # one layer, B=1, U=2 units, H=2; the second unit is padding and must not count
    s = [torch.tensor([[[1.0, 2.0], [100.0, 100.0]]])]
    t = [torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])]
    mask = torch.tensor([[1, 0]])
    # (1^2 + 2^2) / (1 unit * 2 dims) = 2.5
    assert losses.hidden_mse(s, t, mask).item() == pytest.approx(2.5)
    # two layers are summed (keras: one 'mse' per output, total = sum): 2.5 + 0.5 = 3.0
    s2 = s + [torch.tensor([[[1.0, 0.0], [9.0, 9.0]]])]
    t2 = t + [torch.zeros(1, 2, 2)]
    assert losses.hidden_mse(s2, t2, mask).item() == pytest.approx(3.0)


def test_hidden_mse_rejects_layer_count_mismatch():
    with pytest.raises(ValueError):
        losses.hidden_mse([torch.zeros(1, 1, 2)], [], torch.ones(1, 1))


def test_logit_mse_by_hand():
    s = torch.tensor([[[1.0, -1.0]], [[0.0, 3.0]]])  # (B=2, U=1, C=2)
    t = torch.tensor([[[0.0, 0.0]], [[0.0, 1.0]]])
    # (1 + 1 + 0 + 4) / 4 = 1.5
    assert losses.logit_mse(s, t, torch.ones(2, 1)).item() == pytest.approx(1.5)


def test_logit_kl_by_hand_includes_t_squared():
    s = torch.tensor([[[0.0, 0.0]]])
    t = torch.tensor([[[math.log(3.0), 0.0]]])  # p_t = (0.75, 0.25) at T=1
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert losses.logit_kl(s, t, torch.ones(1, 1), 1.0).item() == pytest.approx(expected, rel=1e-5)
    # at T=2: p_t = softmax(log3/2, 0) = (sqrt3, 1)/(sqrt3+1); times T^2 = 4
    a = math.sqrt(3) / (math.sqrt(3) + 1)
    expected_t2 = 4 * (a * math.log(a / 0.5) + (1 - a) * math.log((1 - a) / 0.5))
    assert losses.logit_kl(s, t, torch.ones(1, 1), 2.0).item() == pytest.approx(expected_t2, rel=1e-5)


def test_logit_kl_masks_padding_units():
    s = torch.tensor([[[0.0, 0.0], [5.0, -5.0]]])
    t = torch.tensor([[[0.0, 0.0], [-5.0, 5.0]]])
    assert losses.logit_kl(s, t, torch.tensor([[1, 0]])).item() == pytest.approx(0.0, abs=1e-7)


def test_attention_mse_same_heads_and_masking():
    s = torch.zeros(1, 2, 2, 2)
    t = torch.zeros(1, 2, 2, 2)
    t[0, 0, 0, 0] = 1.0  # one real cell differs by 1
    t[0, 1, 1, 1] = 7.0  # a padded query/key cell: ignored
    mask = torch.tensor([[1, 0]])
    # real cells: 2 heads x 1 query x 1 key = 2 cells, squared error sum 1 -> 0.5
    assert losses.attention_mse([s], [t], mask).item() == pytest.approx(0.5)


def test_attention_mse_head_averaged_when_counts_differ():
    s = torch.full((1, 2, 1, 1), 0.5)  # 2 student heads, mean 0.5
    t = torch.tensor([[[[0.0]], [[1.0]], [[1.0]]]])  # 3 teacher heads, mean 2/3
    assert losses.attention_mse([s], [t], torch.ones(1, 1)).item() == pytest.approx((0.5 - 2 / 3) ** 2)


def test_label_loss_cross_entropy_and_regression():
    logits = torch.tensor([[0.0, 0.0]])
    assert losses.label_loss(logits, torch.tensor([1])).item() == pytest.approx(math.log(2))
    tokens = torch.tensor([[[0.0, 0.0], [9.0, 0.0]]])
    assert losses.label_loss(tokens, torch.tensor([[0, -100]])).item() == pytest.approx(math.log(2))
    assert losses.label_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])).item() == pytest.approx(2.5)


def test_a_batch_mixing_labelled_and_unlabelled_rows_keeps_its_labels():
    """Joint mode: source rows (labelled) and augmentation rows (not) in one batch; the label loss sees the first."""
    rows = [{"input_ids": [2, 5, 3], "units": [0], "label": 1}, {"input_ids": [2, 6, 7, 3], "units": [0]}]
    batch = collate(rows, pad_id=0)
    assert batch["labels"].tolist() == [1, -100]
    logits = torch.tensor([[0.0, 2.0], [5.0, -5.0]])
    expected = -math.log(math.exp(2.0) / (1 + math.exp(2.0)))  # row 0 only, by hand
    assert losses.label_loss(logits, batch["labels"]).item() == pytest.approx(expected, abs=1e-6)
    regression = collate([dict(rows[0], label=0.5), rows[1]], pad_id=0)["labels"]
    assert regression[0].item() == 0.5 and math.isnan(regression[1].item())
    loss = losses.label_loss(torch.tensor([[1.5], [9.0]]), regression)
    assert loss.item() == pytest.approx(1.0)  # (1.5 - 0.5)^2, the unlabelled row ignored
    tags = collate([{"input_ids": [2, 5, 6, 3], "units": [1, 2], "label": [1, 0]}, rows[1]], pad_id=0)["labels"]
    assert tags.tolist() == [[1, 0], [-100, -100]]


def test_a_batch_without_any_label_costs_nothing():
    assert losses.label_loss(torch.randn(2, 3), torch.tensor([-100, -100])).item() == 0.0
    assert losses.label_loss(torch.randn(2, 1), torch.tensor([float("nan")] * 2)).item() == 0.0
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    assert losses.label_loss(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-6)


def test_logit_loss_registry_lists_names():
    with pytest.raises(KeyError, match="known: kl, mse"):
        losses.LOGIT_LOSSES.get("cosine")
