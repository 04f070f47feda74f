"""A teacher and a student with different vocabularies on a token task: the losses are taken at the same words.

Units are words (the first sub-token of each), so the teacher cache's k-th unit and the student's k-th unit are
word k whatever each tokenizer makes of it; where one side truncates more words, both keep the words they share.
"""

import numpy as np
import torch
from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

from xdlib.data import collate, encode, gather_units
from xdlib.kd import build_teacher_cache, student_counts
from xdlib.tasks import Task

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
# the teacher splits "playing" and keeps "football" whole; the student does the opposite
TEACHER_VOCAB = SPECIAL + ["play", "##ing", "football", "today", "we", "went"]
STUDENT_VOCAB = SPECIAL + ["playing", "foot", "##ball", "to", "##day", "we", "went"]
ROWS = [
    {"words": ["playing", "football", "today"], "label": [0, 1, 0]},
    {"words": ["we", "went", "playing", "football"], "label": [0, 0, 0, 1]},
]
TASK = Task("cross-tok", "token", "generated", lambda: {}, ("O", "X"))


def _tokenizer(vocab):
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)


def _unit_tokens(tok, example):
    return [tok.convert_ids_to_tokens(example["input_ids"][u]) for u in example["units"]]


def test_units_are_the_same_words_under_two_vocabularies():
    t_tok, s_tok = _tokenizer(TEACHER_VOCAB), _tokenizer(STUDENT_VOCAB)
    teacher, student = encode(t_tok, ROWS, TASK, 32), encode(s_tok, ROWS, TASK, 32)
    assert [len(e["input_ids"]) for e in teacher] != [len(e["input_ids"]) for e in student]  # other pieces
    assert _unit_tokens(t_tok, teacher[0]) == ["play", "football", "today"]
    assert _unit_tokens(s_tok, student[0]) == ["playing", "foot", "to"]  # word k's first piece on each side
    for t, s, row in zip(teacher, student, ROWS):
        assert len(t["units"]) == len(s["units"]) == len(row["words"])


def test_teacher_cache_and_student_batch_line_up_word_for_word_with_truncation(tmp_path):
    t_tok, s_tok = _tokenizer(TEACHER_VOCAB), _tokenizer(STUDENT_VOCAB)
    cfg = BertConfig(vocab_size=len(TEACHER_VOCAB), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, num_labels=2)  # fmt: skip
    teacher = BertForTokenClassification(cfg).eval()
    # the student keeps 5 tokens: [CLS] + 3 pieces + [SEP]; row 0 keeps "playing foot ##ball" (2 words),
    # row 1 "we went playing" (3 words); the teacher, at 32 tokens, keeps every word
    cache = build_teacher_cache(teacher, t_tok, ROWS, TASK, 32, tmp_path / "cache", "cpu", "float32", layers=[1])
    student = encode(s_tok, ROWS, TASK, 5)
    counts = student_counts(student, cache)
    assert counts.tolist() == [2, 3]  # the words both sides kept
    assert np.diff(cache.offsets).tolist() == [3, 4]
    # the teacher's logits for row r, word k are the teacher model's own logits at word k's first piece
    with torch.no_grad():
        batch = collate(encode(t_tok, ROWS, TASK, 32), t_tok.pad_token_id)
        out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        direct = gather_units(out.logits, batch["unit_pos"])
    hidden, logits, mask = cache.batch([0, 1], counts.tolist(), [1], "cpu")
    for row, kept in enumerate(counts):
        assert torch.allclose(logits[row, :kept].float(), direct[row, :kept], atol=1e-5)
        assert mask[row].sum() == kept  # student units beyond the shared words take no loss
    trimmed = [dict(e, units=e["units"][:c]) for e, c in zip(student, counts)]
    s_batch = collate(trimmed, s_tok.pad_token_id)
    pieces = [[s_tok.convert_ids_to_tokens(int(s_batch["input_ids"][r, p])) for p in s_batch["unit_pos"][r, :c]]
              for r, c in enumerate(counts)]  # fmt: skip
    assert pieces == [["playing", "foot"], ["we", "went", "playing"]]  # word k on both sides
