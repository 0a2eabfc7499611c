"""UniSRec-style teacher (ID + text): frozen MiniLM text embeddings -> parametric whitening +
mixture-of-experts adaptor (+ item ID embedding in the transductive mode) -> SASRec transformer;
cosine / 0.07; cross-entropy. Pre-trained on source domains, then fine-tuned on the target."""

from __future__ import annotations

from dataclasses import dataclass, field

from .textseq import TextSeqConfig, TextSeqFamily


@dataclass
class UniSRecConfig(TextSeqConfig):
    modalities: list[str] = field(default_factory=lambda: ["text"])


class UniSRec(TextSeqFamily):
    name = "unisrec"
    Config = UniSRecConfig
