"""Model-based scorers over local folders (no download): sentence-embedding similarity and reward models.

- `semantic_similarity`: any local sentence-transformers folder (e.g. a copy of thenlper/gte-large-zh);
  per answer the cosine to its best reference, averaged.
- `reward`: any local sequence-classification folder (e.g. OpenAssistant/reward-model-deberta-v3-large-v2
  or a role-play reward model); the dialogue (messages + answer, through the tokenizer's chat template
  when it has one, else question and answer as a text pair) scored by the first logit; `normalise:
  sigmoid` (default) maps it to 0-1, `none` keeps the raw logit (the board then shows it x 100).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridges.scoring._base import Item, Metric, Score, Scorer


def folder_fingerprint(folder: Path) -> str:
    """The folder's files by name, size and mtime: a changed model is a new scorer identity."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class _FolderScorer(Scorer):
    def __init__(self, options: BaseModel, config: Any, loc: tuple[Any, ...]) -> None:
        super().__init__(options, config, loc)
        path: str = self.options.path  # type: ignore[attr-defined]
        if path.startswith("builtin:"):
            from bridges.scoring.tiny import BUILTINS, builtin_folder

            name = path.removeprefix("builtin:")
            if name not in BUILTINS:
                raise self.error_at("path", f"unknown {path!r} (built-in: {', '.join(BUILTINS)})")
            self.folder = builtin_folder(name)
        else:
            self.folder = config.resolve(path)
        if not self.folder.is_dir():
            raise self.error_at("path", f"{self.folder} is not a local model folder")

    def fingerprint_parts(self) -> dict[str, Any]:
        return {"folder": folder_fingerprint(self.folder)}


class SimilarityOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str  # a local sentence-transformers folder
    batch_size: int = Field(16, ge=1)


class SemanticSimilarity(_FolderScorer):
    name: ClassVar[str] = "semantic_similarity"
    Options: ClassVar[type[BaseModel]] = SimilarityOptions

    def metrics(self) -> list[Metric]:
        return [Metric("semantic_similarity", 1.0, True)]

    def score(self, items: list[Item]) -> list[Score]:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(self.folder), device="cpu")
        answers = [item.outputs[0] if item.outputs else "" for item in items]
        refs = [r for item in items for r in item.references]
        bs = self.options.batch_size  # type: ignore[attr-defined]
        a = model.encode(answers, batch_size=bs, convert_to_tensor=True, normalize_embeddings=True)
        r = model.encode(refs, batch_size=bs, convert_to_tensor=True, normalize_embeddings=True)
        out, j = [], 0
        for i, item in enumerate(items):
            sims = [float((a[i] * r[j + m]).sum()) for m in range(len(item.references))]
            j += len(item.references)
            out.append(Score({"semantic_similarity": max(sims)}, extra={"cosines": sims}))
        return out


class RewardOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str  # a local sequence-classification folder
    normalise: Literal["sigmoid", "none"] = "sigmoid"
    max_length: int = Field(1024, ge=16)


class Reward(_FolderScorer):
    name: ClassVar[str] = "reward"
    Options: ClassVar[type[BaseModel]] = RewardOptions

    def metrics(self) -> list[Metric]:
        return [Metric("reward", 1.0, True)]

    def score(self, items: list[Item]) -> list[Score]:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        opts: RewardOptions = self.options  # type: ignore[assignment]
        tok = AutoTokenizer.from_pretrained(str(self.folder))
        model = AutoModelForSequenceClassification.from_pretrained(str(self.folder)).eval()
        out = []
        with torch.no_grad():
            for item in items:
                answer = item.outputs[0] if item.outputs else ""
                if getattr(tok, "chat_template", None):
                    text = tok.apply_chat_template(
                        [*item.messages, {"role": "assistant", "content": answer}], tokenize=False
                    )
                    enc = tok(text, return_tensors="pt", truncation=True, max_length=opts.max_length)
                else:
                    enc = tok(item.question, answer, return_tensors="pt", truncation=True, max_length=opts.max_length)
                if "token_type_ids" not in tok.model_input_names:
                    enc.pop("token_type_ids", None)
                raw = float(model(**enc).logits[0, 0])
                value = float(torch.sigmoid(torch.tensor(raw))) if opts.normalise == "sigmoid" else raw
                out.append(Score({"reward": value}, extra={"raw": raw}))
        return out
