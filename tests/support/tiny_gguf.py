"""A tiny random-weight llama GGUF written at test time, so llama-server runs with no download.

The weights are noise, but the model is shaped so that tests can rely on it:

* every full word in the vocabulary is a `▁word` piece (plus the prefixes SentencePiece needs
  to merge up to it), so the harness's random-word prompts cost about one token a word;
* only full words can be sampled: the residual stream carries a constant channel (0) that no
  layer writes to, and the `output` rows of the special, byte and prefix tokens are zero except
  a large negative weight on that channel. Output is readable words and EOS is never sampled,
  even with `top_k` disabled and without `ignore_eos`, so completions have exactly `max_tokens`.

`write_tiny_llama(..., bpe=train_bpe_tokenizer(project_texts()))` gives the same model with a
GPT-2 style byte-level BPE vocabulary instead, trained here with Hugging Face `tokenizers`:
llama-server then splits text exactly as that `tokenizer.json` does, so a test can count a
prompt's tokens itself (`usage.prompt_tokens` is that count plus the BOS llama-server adds).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import gguf
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # imported where used: conftest imports this module, and most tests need no BPE
    from tokenizers import Tokenizer

# Common English words (a superset of harness/prompts.py's list): one token each here.
_WORDS_TEXT = (
    "the of and to in is you that it he was for on are as with his they at be this "
    "have from or one had by word but not what all were we when your can said there "
    "use an each which she do how their if will up other about out many then them these "
    "so some her would make like him into time has look two more write go see number no "
    "way could people my than first water been call who oil its now find long down day "
    "did get come made may part over new sound take only little work know place year live "
    "me back give most very after thing our just name good sentence man think say great "
    "where help through much before line right too mean old any same tell boy follow came "
    "want show also around form three small set put end does another well large must big "
    "even such because turn here why ask went men read need land different home us move "
    "try kind hand picture again change off play spell air away animal house point page "
    "letter mother answer found study still learn should world high every near add food "
    "between own below country plant last school father keep tree never start city earth "
    "eye light thought head under story saw left few while along might close something "
    "seem next hard open example begin life always those both paper together got group "
    "often run important until children side feet car mile night walk white sea began grow "
    "took river four carry state once book hear stop without second later miss idea enough "
    "eat face watch far really almost let above girl sometimes mountain cut young talk soon "
    "list song being leave family"
)
WORDS: tuple[str, ...] = tuple(_WORDS_TEXT.split())

SPECIAL_TOKENS: tuple[str, str, str] = ("<unk>", "<s>", "</s>")
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
_BIAS_CHANNEL = 0  # constant 1.0 in the residual stream: gives a known-sign logit direction
_BLOCKED_LOGIT = -50.0  # weight on the constant channel for tokens that must never be sampled

# ChatML: a template llama.cpp's Jinja engine renders and its legacy detector also recognises.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _vocab() -> tuple[list[str], list[float], list[int], set[int]]:
    """Tokens, scores, types, and the ids allowed to be sampled (full words only)."""
    tokens: list[str] = list(SPECIAL_TOKENS)
    types: list[int] = [
        gguf.TokenType.UNKNOWN,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
    ]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    scores: list[float] = [0.0] * len(tokens)

    words = list(dict.fromkeys(f"▁{w}" for w in WORDS))
    word_set = set(words)
    # SentencePiece merges adjacent pieces pairwise, so "▁the" is reachable only through
    # "▁t" and "▁th": add every prefix of two characters or more, after the words.
    prefixes = list(
        dict.fromkeys(w[:i] for w in words for i in range(2, len(w)) if w[:i] not in word_set)
    )
    sampled: set[int] = set()
    for rank, piece in enumerate(words):
        sampled.add(len(tokens))
        tokens.append(piece)
        scores.append(-float(rank) / len(words))  # higher score merges first
        types.append(gguf.TokenType.NORMAL)
    for rank, piece in enumerate(prefixes):
        tokens.append(piece)
        scores.append(-1.0 - float(rank) / max(1, len(prefixes)))
        types.append(gguf.TokenType.NORMAL)
    return tokens, scores, types, sampled


# The byte-level BPE vocabulary (`bpe=`): GPT-2's one special token stands for both BOS and EOS;
# the ChatML markers are special tokens too, so a chat template costs a few tokens, not dozens.
BPE_ENDOFTEXT = "<|endoftext|>"
BPE_SPECIAL_TOKENS: tuple[str, ...] = (BPE_ENDOFTEXT, "<|im_start|>", "<|im_end|>")
# llama.cpp's name for the GPT-2 pre-tokenizer: the regex of HF's `ByteLevel(use_regex=True)`,
# `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`, and nothing more.
# ("default" adds splits of its own, on punctuation runs and digits, that HF does not make.)
BPE_PRE_TOKENIZER = "gpt-2"
# Word tokens, the only ones sampled: the byte-level space marker, then letters only.
_BPE_WORD = re.compile(r"Ġ[A-Za-z]+")
_REPO_ROOT = Path(__file__).resolve().parents[2]


def project_texts(root: Path = _REPO_ROOT) -> list[str]:
    """The repository's own prose (README.md, then docs/*.md by name): a BPE training corpus."""
    paths = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [p.read_text(encoding="utf-8") for p in paths if p.is_file()]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> Tokenizer:
    """A GPT-2 style byte-level BPE tokenizer trained on `texts` (deterministic for the same texts).

    No normalizer and no post-processor: `encode(text, add_special_tokens=False)` and
    `encode(text)` give the same ids, the ones llama-server's `/tokenize` gives with
    `add_special: false`. The special tokens are `BPE_SPECIAL_TOKENS`, ids 0, 1, 2.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(BPE_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return tok


def _bpe_vocab(tok: Tokenizer) -> tuple[list[str], list[int], list[str], set[int], int]:
    """Tokens in id order, their types, the merges, the ids allowed to be sampled, and BOS/EOS."""
    by_id = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError("the tokenizer's ids are not contiguous from 0")
    tokens = [by_id[i] for i in range(len(by_id))]
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    types: list[int] = [
        gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
        for i in range(len(tokens))
    ]
    model = json.loads(tok.to_str())["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"not a BPE tokenizer: {model.get('type')!r}")
    # tokenizers >= 0.20 writes a merge as a pair, older versions as one "a b" string.
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    sampled = {i for i, t in enumerate(tokens) if i not in special and _BPE_WORD.fullmatch(t)}
    endoftext = tok.token_to_id(BPE_ENDOFTEXT)
    if endoftext is None:
        raise ValueError(f"the tokenizer has no {BPE_ENDOFTEXT} token")
    return tokens, types, merges, sampled, endoftext


def write_tiny_llama(
    path: Path,
    *,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int | None = None,
    n_ctx: int = 4096,
    seed: int = 0,
    bpe: Tokenizer | None = None,
) -> Path:
    """Write a deterministic (seeded) random-weight llama model to `path` and return it.

    The default (64 wide, 2 layers) is under 1 MB and very fast on a CPU; `n_embd=512,
    n_layer=8` gives a slower, more GPU-like per-token latency.

    With `bpe` (from `train_bpe_tokenizer`), the vocabulary is that tokenizer's, as a GPT-2
    style BPE (`tokenizer.ggml.model` "gpt2", pre-tokenizer `BPE_PRE_TOKENIZER`, its merges):
    llama-server tokenizes text exactly as `bpe.encode(text, add_special_tokens=False)`, and
    adds one BOS (`<|endoftext|>`) to a prompt, so `usage.prompt_tokens` of a completion is
    that count + 1, as with the SentencePiece vocabulary. Only word tokens (`Ġ` and letters)
    can be sampled.
    """
    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError("n_embd must divide by n_head, and n_head by n_head_kv")
    ff = n_ff if n_ff is not None else 2 * n_embd
    head_dim = n_embd // n_head
    kv_dim = head_dim * n_head_kv
    scores: list[float] | None = None
    merges: list[str] = []
    if bpe is None:
        tokens, scores, types, sampled = _vocab()
        bos_id, eos_id = BOS_ID, EOS_ID
    else:
        tokens, types, merges, sampled, bos_id = _bpe_vocab(bpe)
        eos_id = bos_id  # GPT-2's one <|endoftext|>; never sampled, like every special token
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def rand(*shape: int, scale: float) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(ff)
    writer.add_block_count(n_layer)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    if scores is not None:  # SentencePiece
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_unk_token_id(UNK_ID)
    else:  # byte-level BPE: no scores and no UNK (every byte is a token), merges instead
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(BPE_PRE_TOKENIZER)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
    writer.add_bos_token_id(bos_id)
    writer.add_eos_token_id(eos_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    # numpy shapes are (out, in): GGUF stores them reversed, as llama.cpp expects.
    token_embd = rand(n_vocab, n_embd, scale=1.0)
    token_embd[:, _BIAS_CHANNEL] = 1.0
    writer.add_tensor("token_embd.weight", token_embd)
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    output = rand(n_vocab, n_embd, scale=2.0 / np.sqrt(n_embd))
    output[:, _BIAS_CHANNEL] = 0.0
    blocked = np.array([i for i in range(n_vocab) if i not in sampled])
    output[blocked, :] = 0.0
    output[blocked, _BIAS_CHANNEL] = _BLOCKED_LOGIT
    writer.add_tensor("output.weight", output)

    w_scale = 0.5 / np.sqrt(n_embd)
    for i in range(n_layer):
        attn_out = rand(n_embd, n_embd, scale=w_scale)
        ffn_down = rand(n_embd, ff, scale=0.5 / np.sqrt(ff))
        attn_out[_BIAS_CHANNEL, :] = 0.0  # no layer writes to the constant channel
        ffn_down[_BIAS_CHANNEL, :] = 0.0
        layer = {
            "attn_norm": np.ones(n_embd, dtype=np.float32),
            "attn_q": rand(n_embd, n_embd, scale=w_scale),
            "attn_k": rand(kv_dim, n_embd, scale=w_scale),
            "attn_v": rand(kv_dim, n_embd, scale=w_scale),
            "attn_output": attn_out,
            "ffn_norm": np.ones(n_embd, dtype=np.float32),
            "ffn_gate": rand(ff, n_embd, scale=w_scale),
            "ffn_up": rand(ff, n_embd, scale=w_scale),
            "ffn_down": ffn_down,
        }
        for name, tensor in layer.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", tensor)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
