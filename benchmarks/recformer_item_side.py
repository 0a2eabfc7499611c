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
from _common import DATA, RESULTS, header, log, write_json  # noqa: E402


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


KEYS = ("ndcg@10", "recall@10")


def scores(table: torch.Tensor, ds) -> dict:
    from prmkd.evaluation import evaluate

    m = LastItem(table)
    return {split: {k: round(v, 4) for k, v in evaluate(m, ds, split).metrics.items() if k in KEYS}
            for split in ("valid", "test")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", default=[], help="a fine-tuned Recformer-style run folder")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from prmkd.config import DataConfig
    from prmkd.data.dataset import cache_root, prepare
    from prmkd.teachers import recformer as R
    from prmkd.teachers.plm import item_text_embeddings

    out = header()
    data = DataConfig(path=str(DATA))
    ds, cache = prepare(data, log=log), cache_root(data)  # the caches the pipeline uses
    t0 = time.time()

    def run(name: str, role: str, metrics: dict, config: dict, seed: int = 0) -> dict:
        return {"name": name, "role": role, "dataset": ds.name, "seed": seed, "config": config, "metrics": metrics}

    runs = [run("last-item:minilm-sentence-embedding", "reference",
                scores(torch.from_numpy(item_text_embeddings(ds, cache)), ds), {"item_table": "MiniLM mean pooling"}),
            run("last-item:recformer-cpu-untrained", "reference",
                scores(R.build(R.preset("cpu"), ds, cache, log=log).eval().encode_table(), ds),
                {"item_table": "recformer preset cpu, MiniLM weights"})]
    for folder in args.run:
        ft = Path(folder) / "finetune"
        cfg = json.loads((ft / "config.json").read_text())
        m = R.build(R.RecformerConfig(**cfg["teacher"]), ds, cache, log=log)
        m.load_state_dict(torch.load(ft / "best.pt", map_location="cpu", weights_only=False)["model"])
        res = json.loads((ft / "results.json").read_text())
        config = {"run_dir": folder, "finetune_loss": cfg["teacher"]["finetune_loss"]}
        seed = cfg["train"].get("seed", 0)
        runs.append(run(f"last-item:{folder}", "reference", scores(m.eval().encode_table(), ds), config, seed))
        runs.append(run(f"teacher:{folder}", "teacher", {s: {k: round(res["metrics"][s][k], 4) for k in KEYS}
                                                         for s in ("valid", "test")}, config, seed))
        log(f"{folder}: {runs[-2]['metrics']} (the teacher itself: {runs[-1]['metrics']})")
    out.update({"what": __doc__.split("\n\n")[0], "metric": "NDCG@10 / Recall@10, full ranking, pessimistic ties",
                "runs": runs, "seconds": round(time.time() - t0, 1)})
    write_json(RESULTS / "recformer_item_side.json", out)


if __name__ == "__main__":
    main()
