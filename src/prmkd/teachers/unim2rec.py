"""UniM2Rec-style teacher (ID + text + image): text and image item embeddings, each through its own
mixture-of-experts adaptor, fused by a learned per-item attention over modalities (an item without an
image uses a learned missing-modality vector), plus an item ID embedding, on a SASRec transformer;
cosine / temperature; cross-entropy. A target dataset without image features is refused with a clear error."""

from __future__ import annotations

from dataclasses import dataclass, field

from .textseq import TextSeqConfig, TextSeqFamily


@dataclass
class UniM2RecConfig(TextSeqConfig):
    modalities: list[str] = field(default_factory=lambda: ["text", "image"])


class UniM2Rec(TextSeqFamily):
    name = "unim2rec"
    Config = UniM2RecConfig
