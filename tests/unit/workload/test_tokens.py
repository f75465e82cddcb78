"""Prompt lengths in the model's tokens: which words are one token, what the server adds, and
prompts planned with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from harness.errors import ConfigError, UsageError
from harness.sim.text import count_tokens
from harness.spec.vocabulary import VOCABULARY
from harness.spec.workload import SharedPrefixWorkload, SyntheticWorkload
from harness.workload.generated import SharedPrefix, Synthetic
from harness.workload.tokens import (
    CHECK_WORDS,
    TokenTable,
    learn_table,
    local_counter,
    with_overhead,
)


def trained_tokenizer(path: Path) -> Path:
    """A small word-piece BPE trained on the harness's own words, saved as tokenizer.json."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["[UNK]"])
    rng = np.random.default_rng(0)
    corpus = [" ".join(rng.choice(VOCABULARY, 30)) for _ in range(200)]
    tok.train_from_iterator(corpus, trainer)
    out = path / "tokenizer.json"
    tok.save(str(out))
    return out


def test_the_words_kept_are_one_token_each_under_the_simulators_tokenizer() -> None:
    table = learn_table(count_tokens, "sim")
    assert table.words
    assert all(count_tokens(w) == 1 for w in table.words)
    long_words = [w for w in VOCABULARY if len(w) > 6]  # split in pieces of six characters
    assert long_words
    assert not set(long_words) & set(table.words)
    text = table.random_words(np.random.default_rng(3), 500)
    assert count_tokens(text) == 500


def test_a_tokenizer_whose_counts_do_not_add_up_is_refused() -> None:
    with pytest.raises(UsageError, match=f"{CHECK_WORDS} one-token words count as"):
        learn_table(lambda text: len(text.split()) + (len(text.split()) > 10), "odd")
    with pytest.raises(UsageError, match="only 0 of the harness's"):
        learn_table(lambda text: 2 * len(text.split()), "no single tokens")


def test_a_local_tokenizer_json_counts_exactly(tmp_path: Path) -> None:
    path = trained_tokenizer(tmp_path)
    count, source = local_counter(str(tmp_path), tmp_path, "scenario.yaml")  # the folder works
    assert source == f"tokenizer.json at {path}"
    table = learn_table(count, source)
    text = table.random_words(np.random.default_rng(1), 300)
    assert Tokenizer.from_file(str(path)).encode(text).ids.__len__() == 300
    assert count(text) == 300


def test_a_missing_or_broken_tokenizer_names_the_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        local_counter("nowhere/tokenizer.json", tmp_path, "scenario.yaml")
    assert str(missing.value).startswith("scenario.yaml: workload.tokenizer: expected a")
    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"is not a Hugging Face tokenizer\.json"):
        local_counter(str(bad), tmp_path, "scenario.yaml")


def test_the_servers_own_tokens_come_off_the_text() -> None:
    table = learn_table(count_tokens, "sim")
    assert with_overhead(table, 10, "Hello").overhead == 9  # 1 word, 9 template tokens
    assert with_overhead(table, None, "Hello").overhead == 0  # no usage: nothing known
    assert TokenTable(table.words, "x", 9).text_tokens(256) == 247
    assert TokenTable(table.words, "x", 9).text_tokens(4) == 1  # never an empty prompt


def test_generated_prompts_have_the_asked_length_in_tokens() -> None:
    table = with_overhead(learn_table(count_tokens, "sim"), 10, "Hello")
    synthetic = Synthetic(SyntheticWorkload.model_validate({"prompt_tokens": 200, "seed": 4}))
    synthetic.use_tokens(table)
    spec = synthetic.request(0)
    assert spec.planned_prompt_tokens == 200
    assert count_tokens(spec.prompt) == 200 - 9
    shared = SharedPrefix(
        SharedPrefixWorkload.model_validate(
            {"num_prefixes": 4, "prefix_tokens": 100, "suffix_tokens": 30, "seed": 2}
        )
    )
    shared.use_tokens(table)
    first, second = shared.request(0), shared.request(1)
    assert first.planned_prompt_tokens == 130
    assert count_tokens(first.prompt) == 130 - 9
    prefix = shared.prefix(shared.group_of(0))
    assert first.prompt.startswith(prefix)
    assert count_tokens(prefix) == 100
    assert shared.prefix(shared.group_of(1)) != prefix or second.prompt.startswith(prefix)
