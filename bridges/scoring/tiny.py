"""Tiny random models for the model-based scorers, built offline in seconds (tests, `configs/scoring.yaml`).

Their numbers are noise: they exist so the plumbing runs with no download. A scorer's `path` of
`builtin:tiny-embedding` or `builtin:tiny-reward` builds one once under ~/.cache/benchbridge/models.
For real scores point `path` at a local copy of a real model (e.g. thenlper/gte-large-zh for semantic
similarity, OpenAssistant/reward-model-deberta-v3-large-v2 for reward).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

BUILTINS = ("tiny-embedding", "tiny-reward")
_CORPUS = [
    "The sky looks blue because air scatters blue light.",
    "Could you please send me the report?",
    "A thermometer measures temperature.",
    "天空看起来是蓝色的，因为空气散射蓝光。",
    "请您把文件发给我，谢谢！",
    "水在标准大气压下的沸点是100摄氏度。",
    "def add(a, b): return a + b",
]


def _tokenizer(folder: Path) -> object:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(_CORPUS * 4, trainers.WordPieceTrainer(vocab_size=400, special_tokens=special))
    fast = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    from tokenizers import processors

    fast.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast.save_pretrained(str(folder))
    return fast


def _config(vocab: int) -> object:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )


def build_embedding_model(folder: Path, seed: int = 0) -> Path:
    """A sentence-transformers folder: tiny BERT + mean pooling."""
    import torch
    from sentence_transformers import SentenceTransformer, models  # type: ignore[attr-defined]
    from transformers import BertModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "bert"
        tok = _tokenizer(base)
        BertModel(_config(len(tok))).save_pretrained(str(base))  # type: ignore[arg-type]
        word = models.Transformer(str(base), max_seq_length=128)
        pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
        SentenceTransformer(modules=[word, pool], device="cpu").save(str(folder))
    return folder


def build_reward_model(folder: Path, seed: int = 0) -> Path:
    """A sequence-classification folder with one label: a tiny random reward model."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    tok = _tokenizer(folder)
    cfg = _config(len(tok))  # type: ignore[arg-type]
    cfg.num_labels = 1  # type: ignore[attr-defined]
    BertForSequenceClassification(cfg).save_pretrained(str(folder))
    return folder


def builtin_folder(name: str) -> Path:
    """The folder of `builtin:<name>`, built on first use (atomically: a killed build leaves nothing)."""
    from bridges.models import cache_root

    folder = cache_root() / f"scoring-{name}"
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        (build_embedding_model if name == "tiny-embedding" else build_reward_model)(tmp / "m")
        os.replace(tmp / "m", folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
