"""UniSRec-style teacher (ID + text): frozen MiniLM text embeddings -> parametric whitening +
mixture-of-experts adaptor (+ item ID embedding in the transductive mode) -> SASRec transformer;
cosine / 0.07; cross-entropy. Pre-trained on source domains, then fine-tuned on the target."""

from __future__ import annotations

from dataclasses import dataclass, field

from .textseq import (  # noqa: F401  (interface)
    ADDED_LATER, FINETUNE_ONLY, TextSeqConfig, build, load_pretrained, pretrain, pretrain_options)

SIMILARITY = "cos"


@dataclass
class Config(TextSeqConfig):
    modalities: list[str] = field(default_factory=lambda: ["text"])
