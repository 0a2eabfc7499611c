"""Teacher caches in float16 against float32: the same PRM-KD student?

    python benchmarks/cache_dtype.py configs/scientific.toml     # -> benchmarks/results/cache_dtype_scientific.json

After `prmkd run CONFIG` has built the teachers and the main PRM-KD runs: every teacher cache is written again in
float16 (the same rows, rounded) under <out>/teachers-float16/<teacher>/cache, the main PRM-KD run is repeated on
the pipeline's seeds with those caches (nothing else changed), and the two are compared: test metrics per seed,
mean and spread over seeds, a paired t-test over users, file sizes and the largest rounding error of a row.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, header, pipeline_with_teachers, student_variant, write_json  # noqa: E402


def to_float16(src: Path, dest: Path, ds) -> dict:
    from prmkd.io import read_json
    from prmkd.teachers.cache import ARRAYS, write_cache

    man = read_json(src / "manifest.json")
    if (dest / "manifest.json").exists() and read_json(dest / "manifest.json").get("source_build") == man["build_id"]:
        arrays = None
    else:
        arrays = {k: np.load(src / f"{k}.npy") for k in ARRAYS}
        keep = ("name", "family", "similarity", "temperature", "metrics", "parameters", "config")
        write_cache(dest, ds=ds, dtype="float16", **{k: man[k] for k in keep if k in man}, **arrays,
                    extra={"source_build": man["build_id"], "teacher_fingerprint": man.get("teacher_fingerprint")})
    a32 = np.load(src / "train.npy", mmap_mode="r")
    a16 = np.load(dest / "train.npy", mmap_mode="r")
    err = float(np.abs(np.asarray(a16[:50000], np.float32) - np.asarray(a32[:50000], np.float32)).max())
    return {"teacher": man["name"], "bytes_float32": sum((src / f"{k}.npy").stat().st_size for k in ARRAYS),
            "bytes_float16": sum((dest / f"{k}.npy").stat().st_size for k in ARRAYS),
            "max_abs_rounding_error_first_50k_train_rows": err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    os.chdir(ROOT)
    from prmkd.io import read_json
    from prmkd.log import setup_logging

    setup_logging()
    t0 = time.time()
    hdr = header()
    pipe = pipeline_with_teachers(args.config, args.overrides)
    caches16 = {n: pipe.out / "teachers-float16" / n / "cache" for n in pipe.caches}
    sizes = {n: to_float16(Path(p), caches16[n], pipe.ds) for n, p in pipe.caches.items()}
    rows, comp = student_variant(pipe, "cache-float16", "float16-caches", caches=caches16)
    write_json(RESULTS / f"cache_dtype_{pipe.cfg.name}.json", {
        **hdr, "pipeline_config": args.config, "method": __doc__.strip(), "caches": sizes, **comp,
        "distill": read_json(Path(rows["main"][0]["run_dir"]) / "results.json")["distill"],
        "script_seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
