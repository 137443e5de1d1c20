"""Tiny random BERT models with a small WordPiece vocabulary, built on the fly for hermetic tests."""

from __future__ import annotations

import string
from pathlib import Path

import torch

WORDS = (
    "the a an of and or to in on for with is are was were be by as at from that this it its not no "
    "what which who how why when where do does did can could should would may might will "
    "cell cells protein gene genes cancer risk study studies patients treatment effect effects disease "
    "blood brain heart virus vaccine drug dose trial results data model models search query document "
    "retrieval late interaction token vector vectors score scores index sparse dense learned neural "
    "apple banana fruit fruits healthy health good bad red green blue small large new old high low"
).split()

#: Texts of every shape a backend must agree on: one word, a sentence, punctuation, the whole vocabulary (longer
#: than a tiny model's document limit) and a single character.
MIXED_TEXTS = ["cells", "what is the risk of cancer for patients in this study", "apple banana fruit, red & green!",
               " ".join(WORDS), "x"]


def build_tokenizer(directory: Path):
    """A BERT-style WordPiece fast tokenizer (lower-case, [CLS] x [SEP]) saved in ``directory``."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]"]
    letters = list(string.ascii_lowercase + string.digits)
    vocab_list = specials + list(string.punctuation) + letters + ["##" + c for c in letters] + WORDS
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    return fast


def build_bert(directory: Path, *, masked_lm: bool = False, hidden: int = 32, seed: int = 0) -> Path:
    """A 2-layer random BERT (``BertForMaskedLM`` if ``masked_lm``) with the tiny tokenizer, in ``directory``."""
    from transformers import BertConfig, BertForMaskedLM, BertModel

    tokenizer = build_tokenizer(directory)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = (BertForMaskedLM if masked_lm else BertModel)(config)
    model.save_pretrained(str(directory))
    return directory
