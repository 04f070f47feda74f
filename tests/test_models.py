"""Architecture table, student initialisations, projections, unfreezing units and layer maps."""

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from xdlib.architectures import ARCHITECTURES, Architecture, arch_problem, parse_arch
from xdlib.config import ConfigError
from xdlib.models import (
    HiddenProjection,
    architecture,
    build_student,
    count_parameters,
    encoder_units,
    evenly_spaced_layers,
    layer_map,
    pca_embeddings,
)


@pytest.mark.parametrize(("name", "millions", "heads"), [("l6-h256", 13, 8), ("l6-h384", 22, 12), ("l12-h384", 33, 12)])
def test_paper_architectures_have_paper_sizes(name, millions, heads):
    arch = architecture(name)
    model = BertModel(
        BertConfig(
            vocab_size=30522,
            hidden_size=arch.hidden,
            num_hidden_layers=arch.layers,
            num_attention_heads=arch.heads,
            intermediate_size=arch.intermediate,
        )
    )
    assert arch.heads == heads and arch.intermediate == 4 * arch.hidden
    assert abs(count_parameters(model) / 1e6 - millions) < 1.0


def test_custom_architectures():
    assert architecture("l4-h512").heads == 8
    assert architecture("l2-h96").heads == 3  # not in the table: most heads with head dim >= 32
    assert architecture("l2-h32", heads=2).heads == 2
    with pytest.raises(ConfigError, match="does not divide"):
        architecture("l2-h30", heads=4)


def test_the_default_architecture_is_in_the_table():
    assert "l3-h384" in ARCHITECTURES
    arch = ARCHITECTURES.get("l3-h384")
    assert (arch.layers, arch.hidden, arch.heads, arch.intermediate) == (3, 384, 12, 1536)
    assert "offline:all-MiniLM-L6-v2" in arch.inits
    assert architecture("l3-h384") is arch and parse_arch("l3-h384") == (3, 384)
    assert architecture("l3-h384", heads=6).heads == 6
    assert all(ARCHITECTURES.get(name).inits for name in ARCHITECTURES)


def test_one_parser_for_architecture_names(monkeypatch):
    known = "l3-h384, l6-h256, l6-h384, l12-h384"
    for bad in ("tiny", "l0-h384", "l6-h0", "L6-H384", "l6-h384 "):
        assert known in arch_problem(bad) and "at least 1" in arch_problem(bad)
        with pytest.raises(ConfigError, match=f"student_arch={bad!r} is not allowed; allowed: .*{known}"):
            parse_arch(bad)
    assert arch_problem("l7-h96") is None and parse_arch("l7-h96") == (7, 96)
    monkeypatch.setitem(ARCHITECTURES._items, "tiny", Architecture(2, 64, 2, 128))  # a registered name is accepted
    assert arch_problem("tiny") is None and parse_arch("tiny") == (2, 64) and architecture("tiny").heads == 2


def test_layer_subset_init_copies_the_chosen_layers(tiny_encoder):
    student, tok = build_student(
        "l2-h64", "sequence", 3, init=str(tiny_encoder), teacher_ref=str(tiny_encoder), layers=[1, 3]
    )
    source = AutoModel.from_pretrained(tiny_encoder)
    for target, src in enumerate([1, 3]):
        for (k, a), (_, b) in zip(
            student.bert.encoder.layer[target].state_dict().items(), source.encoder.layer[src].state_dict().items()
        ):
            assert torch.equal(a, b), k
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, source.embeddings.word_embeddings.weight)
    assert evenly_spaced_layers(6, 3) == [0, 2, 4]
    with pytest.raises(ConfigError, match="hidden size 64"):
        build_student("l2-h32", "sequence", 2, init=str(tiny_encoder), teacher_ref=str(tiny_encoder))


def test_building_a_student_leaves_the_global_rng_alone(tiny_encoder):
    """The seed decides the student's random parts; the caller's torch RNG is as it was (no global seeding)."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first, _ = build_student("l1-h64", "sequence", 2, init="random", teacher_ref=str(tiny_encoder), seed=7)
    assert torch.equal(torch.rand(3), expected)
    second, _ = build_student("l1-h64", "sequence", 2, init="random", teacher_ref=str(tiny_encoder), seed=7)
    other, _ = build_student("l1-h64", "sequence", 2, init="random", teacher_ref=str(tiny_encoder), seed=8)
    weights = [m.classifier.weight for m in (first, second, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_pca_embeddings_and_freezing(tiny_encoder):
    student, _ = build_student(
        "l1-h16",
        "token",
        3,
        init="random",
        teacher_ref=str(tiny_encoder),
        embeddings="pca",
        freeze_word_embeddings=True,
        heads=2,
    )
    teacher_emb = AutoModel.from_pretrained(tiny_encoder).get_input_embeddings().weight
    emb = student.get_input_embeddings().weight
    assert emb.shape == (teacher_emb.shape[0], 16) and not emb.requires_grad
    assert emb.std().item() == pytest.approx(teacher_emb.std().item(), rel=1e-3)


def test_pca_keeps_the_top_directions():
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(8, 8))[0]
    data = torch.randn(500, 8) * torch.tensor([10.0, 5.0, 1, 1, 1, 1, 1, 1]) @ basis.T
    reduced = pca_embeddings(data, 2)
    # the 2-D result spans the two dominant directions: regressing the data on it explains > 90% of variance
    centred = data - data.mean(0)
    fit = reduced @ torch.linalg.lstsq(reduced, centred).solution
    assert 1 - (centred - fit).pow(2).sum() / centred.pow(2).sum() > 0.9


def test_unfreezing_units_are_top_down(tiny_encoder):
    student, _ = build_student("l2-h64", "sequence", 2, init=str(tiny_encoder), teacher_ref=str(tiny_encoder))
    units = encoder_units(student)
    assert len(units) == 4  # head+pooler, layer 1, layer 0, embeddings
    assert units[1][0] is next(student.bert.encoder.layer[1].parameters())
    assert units[-1][0] is student.bert.embeddings.word_embeddings.weight
    assert sum(len(u) for u in units) == len(list(student.parameters()))


def test_layer_maps():
    assert layer_map("top", 3, 6) == [3, 4, 5, 6]
    assert layer_map("uniform", 3, 6) == [0, 2, 4, 6]
    assert layer_map([0, 1, 2, 3], 3, 6) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="use layer_map='uniform'"):
        layer_map("top", 12, 6)


def test_projection_identity_when_widths_match():
    x = [torch.randn(2, 1, 8)]
    assert HiddenProjection(1, 8, 8)(x)[0] is x[0]
    assert HiddenProjection(1, 8, 16).eval()(x)[0].shape == (2, 1, 16)


def test_checkpoints_saved_in_fp16_load_with_fp32_weights(tiny_encoder, tmp_path):
    """transformers 5 loads a config's dtype by default; trained in fp16, the teacher diverged on a GPU machine."""
    from xdlib.models import load_with_head

    AutoModel.from_pretrained(tiny_encoder).half().save_pretrained(tmp_path / "fp16")
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(tmp_path / "fp16")
    assert AutoModel.from_pretrained(tmp_path / "fp16").dtype == torch.float16  # the trap
    model, _ = load_with_head(str(tmp_path / "fp16"), "sequence", 2)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    fp16 = str(tmp_path / "fp16")
    student, _ = build_student("l1-h64", "sequence", 2, init=fp16, teacher_ref=fp16)
    assert {p.dtype for p in student.parameters()} == {torch.float32}
