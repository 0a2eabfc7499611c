"""The Python API of the README: a whole experiment in a few calls, on the tiny table; and `import prmkd` /
`prmkd --help` stay light (no torch imported)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import prmkd
from conftest import write_tiny_table


def test_a_whole_experiment_from_python(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inter, items = write_tiny_table(tmp_path)
    data = prmkd.prepare(inter, items=str(items), max_len=8, cache_dir=str(tmp_path / "cache"))
    small = dict(hidden_size=16, layers=1, inner_size=32, epochs=2, batch_size=16)
    plain = prmkd.train("sasrec", data, **small)
    assert plain.path.is_dir() and 0 <= plain.metrics["test"]["ndcg@10"] <= 1
    # a teacher from outside: the plain model's own representations, exported in the portable form
    from prmkd.teachers.cache import export_arrays

    arrays = export_arrays(plain.model(), data)
    np.save(tmp_path / "items.npy", arrays["items"])
    np.save(tmp_path / "inst.npy", np.concatenate([arrays["train"], arrays["valid"], arrays["test"]]))
    (tmp_path / "m.json").write_text('{"name": "mine", "similarity": "dot", "temperature": 1.0}')
    teacher = prmkd.import_teacher(tmp_path / "items.npy", tmp_path / "inst.npy", tmp_path / "m.json", data,
                                   tmp_path / "teacher")
    student = prmkd.distill("sasrec", data, [teacher], kd_weight=2.0, **small)
    assert student.results["distill"]["kd_weight"] == 2.0 and student.results["role"] == "distilled"
    masked = prmkd.evaluate(student, "test", mask_history=True)
    assert set(masked) >= {"ndcg@10", "recall@10"}
    assert prmkd.train("sasrec", data, **small).results["fingerprint"] == plain.results["fingerprint"]  # reused


def test_an_unknown_option_lists_the_known_ones(tmp_path):
    inter, items = write_tiny_table(tmp_path)
    data = prmkd.prepare(inter, items=str(items), max_len=8, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(prmkd.api.ConfigError, match="unknown option 'hiden_size' for sasrec .*hidden_size"):
        prmkd.train("sasrec", data, hiden_size=16)


def test_import_and_help_stay_light():
    code = ("import sys, prmkd, prmkd.cli; prmkd.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'transformers', 'fastapi', 'onnxruntime') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
