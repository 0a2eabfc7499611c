"""How much of a Recformer-style teacher's accuracy its item side alone gives: rank every item by the cosine of
its representation to the user's last item (no sequence model), with prmkd's evaluator (full ranking,
pessimistic ties), on Scientific_UniSRec.

Item tables compared:
- MiniLM's own sentence embedding of the item text (mean of the last layer, what the UniSRec-style teacher reads);
- the Recformer-style CPU model before any training (MiniLM weights: the CLS output of an item read alone);
- the item table of each fine-tuned Recformer-style run given with --run (a `prmkd teacher finetune` folder).

    python benchmarks/recformer_item_side.py --run runs/exp5/rf-B --run runs/exp7/rf-live
Output: benchmarks/results/recformer_item_side.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, ROOT, header, log, write_json  # noqa: E402


class LastItem(torch.nn.Module):
    """Scores = cosine(table[last history item], table[candidate])."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = F.normalize(table.float(), dim=1)
        self.table[0] = 0

    def eval_state(self, batch):
        return self.table[batch.items[torch.arange(len(batch.items)), batch.lengths - 1]]

    def score_items(self, state, lo, hi):
        return state @ self.table[lo:hi].T


def scores(table: torch.Tensor, ds) -> dict:
    from prmkd.evaluate import evaluate

    m = LastItem(table)
    return {split: {k: round(v, 4) for k, v in evaluate(m, ds, split).metrics.items() if k in ("ndcg@10", "recall@10")}
            for split in ("valid", "test")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", default=[], help="a fine-tuned Recformer-style run folder")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from prmkd.config import DataConfig
    from prmkd.data.dataset import prepare
    from prmkd.teachers import recformer as R
    from prmkd.teachers.plm import item_text_embeddings

    out = header()
    ds = prepare(DataConfig(path=str(DATA)), log=log)
    rows = {}
    t0 = time.time()
    rows["minilm-sentence-embedding"] = scores(torch.from_numpy(item_text_embeddings(ds, ROOT / ".prmkd/cache")), ds)
    model = R.build(R.preset("cpu"), ds, ROOT / ".prmkd/cache", log=log)
    rows["recformer-cpu-untrained"] = scores(model.eval().encode_table(), ds)
    for run in args.run:
        folder = Path(run) / "finetune"
        cfg = json.loads((folder / "config.json").read_text())["teacher"]
        m = R.build(R.RecformerConfig(**cfg), ds, ROOT / ".prmkd/cache", log=log)
        m.load_state_dict(torch.load(folder / "best.pt", map_location="cpu", weights_only=False)["model"])
        res = json.loads((folder / "results.json").read_text())
        rows[run] = {**scores(m.eval().encode_table(), ds), "finetune_loss": cfg["finetune_loss"],
                     "teacher_itself": {s: round(res["metrics"][s]["ndcg@10"], 4) for s in ("valid", "test")}}
        log(f"{run}: {rows[run]}")
    out.update({"what": __doc__.split("\n\n")[0], "metric": "NDCG@10 / Recall@10, full ranking, pessimistic ties",
                "rows": rows, "seconds": round(time.time() - t0, 1)})
    write_json(RESULTS / "recformer_item_side.json", out)


if __name__ == "__main__":
    main()
