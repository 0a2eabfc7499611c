"""`prmkd run` end to end on a tiny slice of real data: killed mid-way and rerun, it must end exactly as an
uninterrupted run (trained in two parallel processes); a rerun of a finished pipeline redoes nothing."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, require_dataset

CONFIG = """
name = "tiny"
seeds = [0]
out = "{out}"
baselines = ["sasrec", "gru4rec"]
universality = ["fm"]
ablations = true

[data]
path = "{data}"
users = 150
cache_dir = "{cache}"

[train]
epochs = 2
batch_size = 32
progress = false
threads = 1

[models.sasrec]
hidden_size = 16
[models.gru4rec]
hidden_size = 16
gru_size = 16

[distill]
temperature = 1.0
kd_weight = 0.5

[[teachers]]
family = "unisrec"
[teachers.teacher]
hidden_size = 16
inner_size = 32
experts = 2
[teachers.train]
epochs = 2
batch_size = 32
threads = 1

[[teachers]]
family = "unisrec"
name = "unisrec-text"
[teachers.teacher]
hidden_size = 16
inner_size = 32
experts = 2
id_embedding = false
[teachers.train]
epochs = 2
batch_size = 32
threads = 1

[sweep]
temperature = [0.5]
"""


def write_config(tmp: Path, name: str, cache: Path) -> Path:
    data = require_dataset("Scientific_UniSRec")
    path = tmp / f"{name}.toml"
    path.write_text(CONFIG.format(out=tmp / name, data=data, cache=cache))
    return path


def _ctrl_c_as_at_a_terminal() -> None:
    """In the child before it starts: Ctrl-C (SIGINT) back to its default. A test suite started in the background
    (`pytest &`) inherits SIGINT ignored, and a Python started with SIGINT ignored never raises KeyboardInterrupt,
    so the tests that press Ctrl-C would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(config: Path, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "prmkd.cli", "run", str(config), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_ctrl_c_as_at_a_terminal, **kw)


def metrics_by_run(summary: Path) -> dict:
    runs = json.loads(summary.read_text())["runs"]
    return {"/".join(Path(r["run_dir"]).parts[-2:]): r["metrics"] for r in runs}


def test_pipeline_killed_midway_resumes_to_the_same_results(tmp_path):
    cache = tmp_path / "cache"  # shared: the prepared data and text embeddings are reused, as in real reruns
    ref_cfg, cut_cfg = write_config(tmp_path, "reference", cache), write_config(tmp_path, "killed", cache)

    # the reference trains its teachers, then its student runs, in 2 processes; every run is at 1 thread (the
    # config's train.threads), so it must equal the serial, killed and resumed pipeline below to the last bit
    t0 = time.time()
    ref = run(ref_cfg, "--jobs", "2")
    out, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, out
    uninterrupted = time.time() - t0
    assert "training 10 run(s) in up to 2 processes" in out and "[10/10] " in out
    after_pool = out.split("[10/10] ", 1)[1].splitlines()[1:]
    assert not [ln for ln in after_pool if "parameters ->" in ln], "the serial pass trained a run again"

    # kill the second run once it is inside the baselines (teachers done, students under way)
    proc = run(cut_cfg)
    marker = tmp_path / "killed" / "baselines"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "the pipeline finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "summary.json").exists()

    again = run(cut_cfg)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert "pre-training" not in out and "already exported" in out  # finished teacher stages were reused

    a, b = metrics_by_run(tmp_path / "reference" / "summary.json"), metrics_by_run(tmp_path / "killed" / "summary.json")
    assert a.keys() == b.keys() and len(a) >= 10
    assert a == b
    report = tmp_path / "killed" / "report"
    assert (report / "report.md").exists() and (report / "report.html").exists()
    assert uninterrupted < 180, f"the tiny pipeline took {uninterrupted:.0f}s (about 50 s on an idle 2-core machine)"

    # a finished pipeline reruns without training anything
    rerun = run(cut_cfg)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    assert "parameters ->" not in out  # no model was (re)built for training
    assert metrics_by_run(tmp_path / "killed" / "summary.json") == a


def worker_pids(parent: int) -> list[int]:
    """The spawned worker processes (multiprocessing's spawn_main) among the children of `parent`."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"spawn_main" in cmd:
            pids.append(int(stat.parent.name))
    return pids


def until_pool(config: Path, *args: str) -> tuple[subprocess.Popen, list[str], list[int]]:
    """`prmkd run` started and read until its student runs' pool has started: the process, the lines read so far
    and the pids of its workers."""
    proc = run(config, *args)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("training "):
            break
    deadline = time.time() + 60
    while not (pids := worker_pids(proc.pid)) and time.time() < deadline:
        time.sleep(0.05)
    assert pids, "no worker process found: " + "".join(lines)
    return proc, lines, pids


def alive_workers(pids: list[int], wait: float = 10.0) -> list[int]:
    """Those of `pids` still running a spawned worker after up to `wait` seconds."""
    deadline = time.time() + wait
    while True:
        alive = []
        for p in pids:
            try:
                if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes():  # a zombie's cmdline is empty
                    alive.append(p)
            except OSError:
                pass
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.2)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes through /proc")
def test_a_killed_parallel_worker_is_one_clear_error_and_the_same_command_resumes(tmp_path):
    config = write_config(tmp_path, "workers", tmp_path / "cache")
    args = ("--jobs", "2", "--stages", "baselines", "distill", "ablations")
    proc, lines, pids = until_pool(config, *args)  # kill one of the pool's workers
    os.kill(pids[0], signal.SIGKILL)
    out = "".join(lines) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 2, out
    assert "a worker process ended abruptly" in out and "rerun to resume" in out and "Traceback" not in out

    # Ctrl-C stops the pipeline and its workers at once (no queued run starts afterwards)
    proc, _, pids = until_pool(config, *args)
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    proc.communicate(timeout=60)
    assert time.time() - t0 < 30 and proc.returncode != 0
    assert not alive_workers(pids, wait=1.0), "a worker outlived the pipeline"

    again = run(config, *args)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    summary = json.loads((tmp_path / "workers" / "summary.json").read_text())
    assert {r["name"] for r in summary["runs"]} >= {"sasrec", "gru4rec", "prmkd-sasrec"} and not summary["not_finished"]


def test_run_rejects_an_unknown_teacher_name(tmp_path):
    config = write_config(tmp_path, "names", tmp_path / "cache")
    out = subprocess.run([sys.executable, "-m", "prmkd.cli", "run", str(config), "--teachers", "nosuch"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "--teachers: no teacher named 'nosuch'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("name", ["ml100k", "scientific", "games"])
def test_shipped_configs_load(name):
    from prmkd.experiment.pipeline import load_pipeline

    cfg = load_pipeline(REPO / "configs" / f"{name}.toml")
    assert cfg.name == name and cfg.teachers and cfg.student == "sasrec"


def test_collect_only_trains_nothing_and_lists_what_is_missing(tmp_path):
    config = write_config(tmp_path, "collect", tmp_path / "cache")
    out = subprocess.run([sys.executable, "-m", "prmkd.cli", "run", str(config), "--collect-only", "--stages",
                          "baselines", "distill"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert "parameters ->" not in out.stderr  # no model was built for training
    summary = json.loads((tmp_path / "collect" / "summary.json").read_text())
    assert summary["runs"] == []
    missing = {Path(p).name for p in summary["not_finished"]}
    assert {"unisrec", "unisrec-text", "sasrec-seed0", "gru4rec-seed0"} <= missing


def teacher_metrics(summary: Path) -> dict:
    runs = json.loads(summary.read_text())["runs"]
    return {r["name"]: r["metrics"] for r in runs if r["role"] == "teacher"}


def test_parallel_teacher_build_equals_a_serial_one(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs = {}
    for jobs in (1, 2):
        config = write_config(tmp_path, f"jobs{jobs}", cache)
        out = subprocess.run([sys.executable, "-m", "prmkd.cli", "run", str(config), "--stages", "teachers",
                              "--jobs", str(jobs)], cwd=REPO, capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        outs[jobs] = out.stderr
        for name in ("unisrec", "unisrec-text"):
            assert (tmp_path / f"jobs{jobs}" / "teachers" / name / "cache" / "manifest.json").exists()
    assert "building teachers in up to 2 processes" in outs[2] and "[unisrec-text] " in outs[2]
    a, b = (teacher_metrics(tmp_path / f"jobs{j}" / "summary.json") for j in (1, 2))
    assert a and a == b
    # resumed, only the teachers not yet built take processes: none here, one once its fine-tuning changes
    from prmkd.experiment.pipeline import Pipeline, load_pipeline, teacher_groups

    def groups(*sets):
        cfg = load_pipeline(tmp_path / "jobs2.toml", list(sets))
        return [[s.label for s in g] for g in teacher_groups(Pipeline(cfg, log=lambda m: None))]

    assert groups() == []
    assert groups("teachers.unisrec-text.train.epochs=3") == [["unisrec-text"]]


def test_parallel_teacher_build_reports_a_failing_teacher_by_name(tmp_path):
    config = write_config(tmp_path, "fail", tmp_path / "cache")
    # a UniM2Rec-style teacher on a dataset without image features must fail clearly, in its own process
    config.write_text(config.read_text().replace('name = "unisrec-text"', 'name = "m2"', 1)
                      .replace('family = "unisrec"\nname = "m2"', 'family = "unim2rec"\nname = "m2"'))
    out = subprocess.run([sys.executable, "-m", "prmkd.cli", "run", str(config), "--stages", "teachers",
                          "--jobs", "2"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode != 0
    assert "parallel teacher build failed: teacher m2:" in out.stderr and "image" in out.stderr
    assert "Traceback" not in out.stderr
    # the other teacher's process ran to the end
    assert (tmp_path / "fail" / "teachers" / "unisrec" / "cache" / "manifest.json").exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes through /proc")
def test_a_killed_or_interrupted_pipeline_stops_its_teacher_builds(tmp_path):
    """A teacher build must not go on, unseen, after its pipeline has gone: a rerun would build the same teacher
    into the same folder at the same time."""
    config = write_config(tmp_path, "tkill", tmp_path / "cache")
    args = ("--stages", "teachers", "--jobs", "2")
    long = [f"--set=teachers.{t}.train.{k}=1000" for t in ("unisrec", "unisrec-text") for k in ("epochs", "patience")]
    for sig in (signal.SIGKILL, signal.SIGINT):
        proc = run(config, *args, *long)
        lines, started = [], 0
        for line in proc.stdout:  # both builds under way (a process still starting up dies with its parent anyway)
            lines.append(line)
            started += "] == teacher " in line
            if started == 2:
                break
        pids = worker_pids(proc.pid)
        assert len(pids) == 2, "".join(lines)
        proc.send_signal(sig)
        proc.communicate(timeout=60)
        assert proc.returncode != 0
        assert not alive_workers(pids), f"a teacher build outlived its pipeline ({signal.Signals(sig).name})"
    again = run(config, *args)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    for name in ("unisrec", "unisrec-text"):
        assert (tmp_path / "tkill" / "teachers" / name / "cache" / "manifest.json").exists()


def test_teachers_sharing_a_pretraining_run_are_built_in_one_process(tmp_path):
    """configs/scientific.toml: the UniSRec-style teacher (d=256) and the UniM2Rec-style one (d=128) pre-train
    different text-side computations on Games, so each is its own group, as is the Recformer-style teacher. With
    the same text-side options (the ID embedding and its dropout are fine-tuning options) they pre-train one
    computation and form one group. (Its own out folder: a finished pre-training in the checkout's runs/ would
    split the group, the test below.)"""
    require_dataset("Games_LLMRank")
    from prmkd.experiment.pipeline import Pipeline, load_pipeline, teacher_groups

    cfg = load_pipeline(REPO / "configs" / "scientific.toml", [f"out={tmp_path / 'scientific'}"])
    groups = [[s.name or s.family for s in g] for g in teacher_groups(Pipeline(cfg, log=lambda m: None))]
    assert sorted(groups) == [["recformer"], ["unim2rec"], ["unisrec"]]
    unisrec = next(s for s in cfg.teachers if s.family == "unisrec")
    assert unisrec.teacher["id_embedding"] and unisrec.teacher["id_dropout"] > 0
    unisrec.teacher = {**unisrec.teacher, "hidden_size": 128}
    groups = [[s.name or s.family for s in g] for g in teacher_groups(Pipeline(cfg, log=lambda m: None))]
    assert sorted(groups) == [["recformer"], ["unisrec", "unim2rec"]]


def test_teachers_whose_shared_pretraining_has_finished_are_built_apart(tmp_path):
    """Two teachers that pre-train one computation (configs/scientific.toml's UniM2Rec-style teacher given the
    UniSRec-style one's text-side options) are one group until that pre-training's record says it finished (a
    resumed pipeline); then each builds in a process of its own."""
    require_dataset("Games_LLMRank")
    from prmkd.data.dataset import prepare
    from prmkd.experiment.pipeline import Pipeline, load_pipeline, teacher_groups
    from prmkd.teachers.build import pretrain_key

    cfg = load_pipeline(REPO / "configs" / "scientific.toml", [
        f'out="{tmp_path}"', "teachers.unim2rec.teacher.hidden_size=256", "teachers.unim2rec.teacher.id_dropout=0.8",
        "teachers.unim2rec.teacher.id_embedding=true"])
    pipe = Pipeline(cfg, log=lambda m: None)
    groups = lambda: sorted([s.label for s in g] for g in teacher_groups(pipe))  # noqa: E731
    assert groups() == [["recformer"], ["unisrec", "unim2rec"]]
    tcfg = pipe.teacher_run_config(cfg.teachers[0])
    family, key = pretrain_key(tcfg, [prepare(s, log=None) for s in tcfg.sources])
    done = Path(tcfg.pretrain_dir) / f"{family}-{key}" / "done.json"
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps({"key": "another pre-training"}))
    assert groups() == [["recformer"], ["unisrec", "unim2rec"]]
    done.write_text(json.dumps({"key": key}))
    assert groups() == [["recformer"], ["unim2rec"], ["unisrec"]]


def test_set_reaches_one_teacher_of_the_list_by_name_or_index(tmp_path):
    """`--set teachers.<name or index>.<section>.<key>=v` changes that teacher only; a UniM2Rec-style teacher set to
    the UniSRec-style one's text-side options joins its pre-training group. Bad names and indexes are clear errors."""
    require_dataset("Games_LLMRank")
    from prmkd.errors import ConfigError
    from prmkd.experiment.pipeline import Pipeline, load_pipeline, teacher_groups

    path = REPO / "configs" / "scientific.toml"
    cfg = load_pipeline(path, ["teachers.unim2rec.teacher.hidden_size=256", "teachers.2.teacher.id_dropout=0.8",
                               "teachers.unim2rec.teacher.id_embedding=true",
                               f"out={tmp_path / 'scientific'}"])  # not the checkout's runs/ (its pre-training)
    m2 = next(s for s in cfg.teachers if s.family == "unim2rec")
    assert m2.teacher["hidden_size"] == 256 and m2.teacher["id_dropout"] == 0.8 and m2.teacher["id_embedding"]
    assert next(s for s in cfg.teachers if s.family == "recformer").teacher == \
        next(s for s in load_pipeline(path).teachers if s.family == "recformer").teacher
    groups = [[s.name or s.family for s in g] for g in teacher_groups(Pipeline(cfg, log=lambda m: None))]
    assert sorted(groups) == [["recformer"], ["unisrec", "unim2rec"]]
    with pytest.raises(ConfigError, match=r"no entry named 'nosuch' \(entries: \['unisrec', 'recformer', 'unim2rec'\]"):
        load_pipeline(path, ["teachers.nosuch.teacher.hidden_size=256"])
    with pytest.raises(ConfigError, match="index 3 is out of range"):
        load_pipeline(path, ["teachers.3.teacher.hidden_size=256"])
    with pytest.raises(ConfigError, match="is a list of sections"):
        load_pipeline(path, ["teachers.hidden_size=256"])


def test_sweeps_reuse_the_main_runs_and_give_the_best_value_more_seeds(tmp_path, monkeypatch):
    """The main setting's value is never trained again as a sweep run; the value with the best mean validation
    NDCG@10 (the main runs included) gets `best_seeds` too."""
    from prmkd.experiment.pipeline import Pipeline, PipelineConfig, SweepConfig
    from prmkd.io import write_json

    cfg = PipelineConfig(name="s", out=str(tmp_path), seeds=[0, 1, 2],
                         sweep=SweepConfig(temperature=[0.5, 1.0, 2.0], seeds=[0], best_seeds=[1, 2]))
    pipe = Pipeline(cfg, log=lambda m: None)
    pipe.caches = {"t": tmp_path / "cache"}
    valid = {0.5: 0.03, 2.0: 0.05}  # the main value (tau = 1.0) gets 0.04 from its runs
    for s in (0, 1, 2):
        run = pipe.layout.distilled("sasrec", s)
        run.path.mkdir(parents=True)
        write_json(run.results, {"name": "prmkd-sasrec", "seed": s, "metrics": {"valid": {"ndcg@10": 0.04},
                                                                                  "test": {"ndcg@10": 0.04}}})
    trained = []

    def fake(rc):
        trained.append((rc.distill.temperature, rc.train.seed))
        return {"name": "prmkd-sasrec", "seed": rc.train.seed,
                "metrics": {"valid": {"ndcg@10": valid[rc.distill.temperature]}, "test": {"ndcg@10": 0.0}}}

    monkeypatch.setattr(pipe, "train_run", fake)
    pipe.stage_sweeps()
    assert trained == [(0.5, 0), (2.0, 0), (2.0, 1), (2.0, 2)]
    assert pipe.best_points["temperature"]["value"] == 2.0
    main_points = [r for r in pipe.runs if (r.get("sweep") or {}).get("main")]
    assert sorted(r["seed"] for r in main_points) == [0, 1, 2]


def test_planning_parallel_runs_defers_a_sweeps_best_value_until_its_values_have_finished(tmp_path, monkeypatch):
    """`plan_runs` (what `--jobs N` trains in parallel) lists the unfinished runs and trains and records nothing;
    the best value's extra seeds are planned only once every swept value has its validation result."""
    from prmkd.experiment.pipeline import Pipeline, PipelineConfig, SweepConfig
    from prmkd.io import read_json, write_json

    cfg = PipelineConfig(name="s", out=str(tmp_path), seeds=[0], baselines=[], universality=[], ablations=False,
                         sweep=SweepConfig(temperature=[0.5, 2.0], seeds=[0], best_seeds=[1, 2]))
    pipe = Pipeline(cfg, log=lambda m: None)
    pipe.caches = {"t": tmp_path / "cache"}
    run = pipe.layout.distilled("sasrec", 0)
    run.path.mkdir(parents=True)
    write_json(run.results, {"name": "prmkd-sasrec", "seed": 0, "metrics": {"valid": {"ndcg@10": 0.04},
                                                                              "test": {"ndcg@10": 0.04}}})
    valid, finished = {0.5: 0.03, 2.0: 0.05}, {(1.0, 0): read_json(run.results)}  # the main run has finished

    def fake(rc):
        key = (rc.distill.temperature, rc.train.seed)
        if key not in finished and pipe.plan is not None:
            pipe.plan[key] = rc
        return finished.get(key)

    monkeypatch.setattr(pipe, "train_run", fake)
    keys = lambda rcs: [(rc.distill.temperature, rc.train.seed) for rc in rcs]  # noqa: E731
    first = pipe.plan_runs(["distill", "sweeps"])
    assert keys(first) == [(0.5, 0), (2.0, 0)]
    assert pipe.runs == [] and pipe.best_points == {} and pipe.plan is None
    for t, s in keys(first):
        finished[(t, s)] = {"name": "prmkd-sasrec", "seed": s,
                            "metrics": {"valid": {"ndcg@10": valid[t]}, "test": {"ndcg@10": 0.0}}}
    assert keys(pipe.plan_runs(["distill", "sweeps"])) == [(2.0, 1), (2.0, 2)]
    assert pipe.runs == [] and pipe.best_points == {}


def test_a_run_finished_elsewhere_in_the_pipeline_is_copied_not_trained(tmp_path):
    from conftest import write_tiny_table
    from prmkd.config import DataConfig, TrainConfig
    from prmkd.data.dataset import prepare
    from prmkd.experiment.pipeline import Pipeline, PipelineConfig

    inter, items = write_tiny_table(tmp_path)
    data = DataConfig(path=str(inter), items=str(items), max_len=8, cache_dir=str(tmp_path / "cache"))
    cfg = PipelineConfig(name="c", out=str(tmp_path / "p"), data=data, models={"sasrec": {"hidden_size": 8}},
                         train=TrainConfig(epochs=1, batch_size=16, progress=False))
    logs = []
    pipe = Pipeline(cfg, log=logs.append)
    pipe.ds = prepare(data, log=None)
    first = pipe.train_run(pipe.run_cfg("sasrec", 0, pipe.layout.extra("tuning", "x", 0).path))
    again = Pipeline(cfg, log=logs.append)  # a later process: it finds the run by reading the folder
    again.ds = pipe.ds
    second = again.train_run(again.run_cfg("sasrec", 0, again.layout.baseline("sasrec", 0).path))
    assert second["metrics"] == first["metrics"] and any("copied" in m for m in logs)
    assert (again.layout.baseline("sasrec", 0).best).exists()


def test_copying_a_finished_run_leaves_out_a_killed_writers_temporary_files_and_the_lock(tmp_path):
    from prmkd.experiment.pipeline import copy_run

    src = tmp_path / "src"
    src.mkdir()
    for name in ("best.pt", "results.json", "per_user_test.npz", "checkpoint.pt", "best.4242.tmp.pt",
                 "per_user_test.17.tmp.npz", ".training.lock"):
        (src / name).write_text(name)
    copy_run(src, tmp_path / "dest")
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["best.pt", "per_user_test.npz", "results.json"]
    assert (tmp_path / "dest" / "best.pt").read_text() == "best.pt"


def test_a_universality_model_distils_with_its_own_overrides(tmp_path, monkeypatch):
    """`distill_overrides.<model>` changes only that universality model's distillation; the student keeps [distill],
    and an override for a model the pipeline does not distil, or of the teachers, is a one-line error."""
    from prmkd.errors import ConfigError
    from prmkd.experiment.pipeline import Pipeline, load_pipeline

    path = tmp_path / "o.toml"
    path.write_text('universality = ["fm", "lightgcn"]\n[distill]\nkd_weight = 10.0\ntemperature = 4.0\n'
                    '[distill_overrides.fm]\nkd_weight = 0.3\n')
    cfg = load_pipeline(path)
    cfg.out = str(tmp_path / "out")
    pipe = Pipeline(cfg, log=lambda m: None)
    pipe.caches = {"t": tmp_path / "cache"}
    used = {}

    def fake(rc):
        if rc.distill.teachers:
            used[rc.model["name"]] = (rc.distill.kd_weight, rc.distill.temperature)
        return None

    monkeypatch.setattr(pipe, "train_run", fake)
    pipe.stage_universality()
    pipe.stage_distill()
    assert used == {"fm": (0.3, 4.0), "lightgcn": (10.0, 4.0), "sasrec": (10.0, 4.0)}

    for text, match in [('[distill_overrides.sasrec]\nkd_weight = 1.0\n', "'sasrec' is not in universality"),
                        ('[distill_overrides.fm]\nteachers = ["x"]\n', "other than teachers"),
                        ('[distill_overrides.fm]\nkd_wieght = 1.0\n', "distill_overrides.fm.kd_wieght")]:
        path.write_text('universality = ["fm"]\n' + text)
        with pytest.raises(ConfigError, match=match):
            load_pipeline(path)


def test_with_one_teacher_to_build_the_runs_that_need_none_train_beside_it(tmp_path):
    """--jobs 2 and a single teacher to build: the plain runs start before the teacher and train beside it, and
    every run ends as in the serial pipeline (all at 1 thread: to the last bit)."""
    cache = tmp_path / "cache"
    args = ("--teachers", "unisrec", "--stages", "baselines", "distill", "universality")
    logs = {}
    for name, jobs in (("beside", "2"), ("serial", "1")):
        proc = run(write_config(tmp_path, name, cache), "--jobs", jobs, *args)
        logs[name], _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, logs[name]
    out = logs["beside"]
    started = out.index("training 3 run(s) that need no teacher in up to 1 process(es)")  # sasrec, gru4rec, fm
    # when the teacher is built, the plain runs not yet started join the distilled ones on both processes
    built = re.search(r"teacher built: (\d) run\(s\) beside it finished, training or queued there, (\d) not yet "
                      r"queued move", out)
    assert built and int(built[1]) + int(built[2]) == 3, out
    after = out.index(f"training {2 + int(built[2])} run(s) in up to 2 processes")
    assert started < out.index("== teacher unisrec") < built.start() < after
    ends = re.findall(r"\] (\S+) finished \(", out)  # each run trained once, in one pool or the other
    assert len(ends) == len(set(ends)) == 5, ends
    assert "training 3 run(s) that need no teacher" not in logs["serial"]
    a = metrics_by_run(tmp_path / "beside" / "summary.json")
    assert a == metrics_by_run(tmp_path / "serial" / "summary.json") and len(a) == 6  # with the teacher
