"""An offline word-level tokenizer built from the world's vocabulary.

Real Tango uses FLAN-T5's SentencePiece vocabulary, which cannot be downloaded here. The world's
captions come from a closed grammar, so a word-level vocabulary covers them exactly; unknown
words map to ``<unk>`` (for real captions, use the real tokenizer through the real-checkpoint
path). The tokenizer is a ``transformers.PreTrainedTokenizerFast`` so it saves, loads and pads
like any Hugging Face tokenizer, and T5 conventions hold: ``<pad>`` = 0, ``</s>`` = 1,
``<unk>`` = 2, and an end-of-sequence token is appended.
"""

from __future__ import annotations

import re

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from .captions import PHRASES

SPECIAL = ["<pad>", "</s>", "<unk>"]
CONNECTIVES = ["then", "followed", "by", "before", "after", "while", "with", "in", "the",
               "background", "sound", "of", ","]


def world_vocabulary() -> list[str]:
    """Every word the grammar can emit, sorted (deterministic ids)."""
    words = set(CONNECTIVES)
    for clauses, gerunds in PHRASES.values():
        for phrase in clauses + gerunds:
            words.update(re.findall(r"[a-z]+|,", phrase.lower()))
    return SPECIAL + sorted(words)


def build_world_tokenizer(max_length: int = 32) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over :func:`world_vocabulary`."""
    vocab = {w: i for i, w in enumerate(world_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=max_length)
