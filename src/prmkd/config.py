"""Configuration: plain dataclasses, loaded from TOML or YAML, with `key=value` overrides.

An unknown key is an error that names the key (never a silent new attribute, never `None`).
The resolved configuration is what gets written next to every result.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError


# --------------------------------------------------------------------------------------------------
# sections


@dataclass
class FeatureConfig:
    """An optional per-item feature matrix (e.g. image vectors), joined onto the items by key."""

    name: str = "image"
    path: str = ""  # raw little-endian float32 rows (.npy also accepted)
    dim: int = 0  # row width for raw files
    index: str = ""  # "KEY<TAB>row" lines mapping an item's raw id (e.g. ASIN) to its row


@dataclass
class DataConfig:
    """Where the interactions and item texts are, and how to turn them into a prepared dataset."""

    format: str = "auto"  # auto | unisrec | recbole | table | amazon
    path: str = ""  # folder (unisrec / recbole), "recbole:ml-100k", or the interactions file (table / amazon)
    name: str = ""  # base name of the atomic files inside `path`; inferred when the folder holds one
    items: str = ""  # item table (table format) or meta JSON lines (amazon format)
    user_column: str = "user"
    item_column: str = "item"
    time_column: str = "timestamp"
    text_fields: list[str] = field(default_factory=lambda: ["title", "brand", "categories"])
    kcore: int = 0  # iterative k-core on users and items (0 = off); for unsplit inputs only
    max_len: int = 50  # histories keep their most recent `max_len` items
    users: int = 0  # keep only the first N users (a slice for quick runs and tests; 0 = all)
    drop_short_users: bool = False  # drop users with fewer than 3 interactions (else they are an error)
    features: list[FeatureConfig] = field(default_factory=list)
    cache_dir: str = ""  # prepared datasets are cached here; default $PRMKD_CACHE or ./.prmkd/cache


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 512  # sequences per batch (every position of each is an instance)
    bucket: int = 0  # > 0: batch sequences of similar length together, sorting pools of this many batches
    lr: float = 1e-3
    weight_decay: float = 0.0  # Adam L2 (the paper's 1e-5 is `weight_decay = 1e-5`)
    patience: int = 10  # epochs without a better validation NDCG@10 before stopping
    min_epochs: int = 0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads (0 = leave torch's default)
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (0 = at epoch ends only)
    grad_clip: float = 0.0  # max gradient norm (0 = off)
    eval_every: int = 1  # validate every N epochs
    progress: bool = True
    max_minutes: float = 0.0  # stop (as if early-stopped) after this much training time (0 = no limit)
    ema: float = 0.0  # > 0: validate, keep and return an exponential moving average of the weights, updated
    #                   after every step with this decay (0.99: a half-life of about 69 steps); 0 = off


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    mrr_k: int = 10
    mask_history: bool = False  # exclude the user's history items from the ranking (target excepted)
    batch_size: int = 4096  # users per scoring batch
    max_elements: int = 1 << 25  # users x items scored at once; larger catalogues are chunked over items
    users: int = 0  # evaluate a fixed random subset of this many users (0 = all); for large source domains


@dataclass
class DistillConfig:
    """PRM-KD (paper section 3): choices the paper leaves open are named here and recorded."""

    teachers: list[str] = field(default_factory=list)  # teacher cache folders
    temperature: float = 1.0  # tau of Eq. 1 (applied to every teacher's scores)
    kd_weight: float = 1.0  # lambda of Eq. 6
    epsilon: float = 0.1  # consistency threshold of the scoring strategy (Eq. 2)
    candidates: str = "in_batch"  # in_batch | all  ("all" = the paper's "w/o IN" ablation)
    unique_candidates: bool = True  # in-batch candidates = the distinct target items of the batch
    fusion: str = "consistency"  # consistency | average  ("average" = the paper's "w/o WA" ablation)
    normalization: str = "softmax"  # how s~ is made from s (Eq. 1 output): softmax | minmax | rank
    teacher_weights: Any = "valid_ndcg"  # valid_ndcg | uniform | [w1, w2, ...]
    student_temperature: float = 1.0  # the student's p uses its own logits / this
    kl: str = "reverse"  # reverse (paper Eq. 5: sum p log p/q) | forward (sum q log q/p)
    max_instances: int = 0  # > 0: L_KD on at most this many instances of each batch, drawn at random, whose targets
    #                         are the candidates (a batch of thousands of instances makes nearly the whole catalogue
    #                         in-batch; 0 = every instance, as the paper)


@dataclass
class RunConfig:
    """One training run of a model (a baseline student, or a distilled one when `distill` has teachers)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: dict = field(default_factory=lambda: {"name": "sasrec"})
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    out: str = ""  # run folder; default runs/<model>-<dataset>-seed<seed>


# --------------------------------------------------------------------------------------------------
# loading


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(tp, value, key: str):
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, key)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key + ".")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a table of keys, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}': unsupported type {_type_name(tp)}")


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass `cls` from a dict; an unknown key, a wrong type or a value out of range is a ConfigError
    naming the key (`check_values`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}': expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        if k not in names:
            raise ConfigError(f"unknown config key '{prefix}{k}' (known keys here: {', '.join(names)})")
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in data.items()}
    obj = cls(**kwargs)
    check_values(obj, prefix)
    return obj


# --------------------------------------------------------------------------------------------------
# values: every section is checked when it is loaded, before anything is written


def _positive(v) -> bool:
    return v > 0


def _at_least_one(v) -> bool:
    return v >= 1


def _non_negative(v) -> bool:
    return v >= 0


def _probability(v) -> bool:
    return 0 <= v < 1


# field name -> (test, what it must be); applied to every section that has a field of that name
RULES: dict[str, tuple] = {
    "epochs": (_at_least_one, "an integer >= 1"),
    "batch_size": (_at_least_one, "an integer >= 1"),
    "lr": (_positive, "a number > 0"),
    "temperature": (_positive, "a number > 0"),
    "student_temperature": (_positive, "a number > 0"),
    "kd_weight": (_non_negative, "a number >= 0"),
    "epsilon": (_non_negative, "a number >= 0"),
    "weight_decay": (_non_negative, "a number >= 0"),
    "patience": (_at_least_one, "an integer >= 1"),
    "min_epochs": (_non_negative, "an integer >= 0"),
    "eval_every": (_at_least_one, "an integer >= 1"),
    "checkpoint_every": (_non_negative, "an integer >= 0 (0 = at epoch ends only)"),
    "grad_clip": (_non_negative, "a number >= 0 (0 = off)"),
    "max_minutes": (_non_negative, "a number >= 0 (0 = no limit)"),
    "threads": (_non_negative, "an integer >= 0 (0 = torch's default)"),
    "ema": (_probability, "a decay in [0, 1) (0 = off)"),
    "max_len": (_at_least_one, "an integer >= 1"),
    "users": (_non_negative, "an integer >= 0 (0 = all)"),
    "kcore": (_non_negative, "an integer >= 0 (0 = off)"),
    "max_elements": (_at_least_one, "an integer >= 1"),
    "max_instances": (_non_negative, "an integer >= 0 (0 = every instance)"),
    "negatives": (_non_negative, "an integer >= 0 (0 = no sampled negatives: the full softmax)"),
    "mrr_k": (_at_least_one, "an integer >= 1"),
    "hidden_size": (_at_least_one, "an integer >= 1"),
    "embedding_size": (_at_least_one, "an integer >= 1"),
    "inner_size": (_at_least_one, "an integer >= 1"),
    "gru_size": (_at_least_one, "an integer >= 1"),
    "heads": (_at_least_one, "an integer >= 1"),
    "layers": (_non_negative, "an integer >= 0"),
    "experts": (_at_least_one, "an integer >= 1"),
    "dropout": (_probability, "a probability in [0, 1)"),
    "attn_dropout": (_probability, "a probability in [0, 1)"),
    "adaptor_dropout": (_probability, "a probability in [0, 1)"),
    "id_dropout": (_probability, "a probability in [0, 1)"),
    "mask_ratio": (_probability, "a probability in [0, 1)"),
    "mlm_prob": (_probability, "a probability in [0, 1)"),
}
# field name -> the values it may take
CHOICES: dict[str, tuple] = {
    "candidates": ("in_batch", "all"),
    "fusion": ("consistency", "average"),
    "normalization": ("softmax", "minmax", "rank"),
    "kl": ("reverse", "forward"),
    "similarity": ("dot", "cos"),
    "format": ("auto", "unisrec", "recbole", "table", "amazon"),
    "cache_dtype": ("float32", "float16"),
}
VALID_K = 10  # validation, early stopping and best-epoch choice use NDCG@10


def _valid_device(name: str) -> bool:
    if name in ("auto", "cpu", "cuda"):
        return True
    head, _, idx = name.partition(":")
    return head == "cuda" and idx.isdigit()


def check_values(obj, prefix: str = "") -> None:
    """Raise a ConfigError naming the first key of section `obj` whose value is out of range."""
    for f in dataclasses.fields(obj):
        v, key = getattr(obj, f.name), prefix + f.name
        rule = RULES.get(f.name)
        if rule and isinstance(v, (int, float)) and not isinstance(v, bool) and not rule[0](v):
            raise ConfigError(f"config key '{key}' = {v!r}: expected {rule[1]}")
        if f.name in CHOICES and isinstance(v, str) and v not in CHOICES[f.name]:
            raise ConfigError(f"config key '{key}' = {v!r}: expected one of {', '.join(CHOICES[f.name])}")
    names = {f.name for f in dataclasses.fields(obj)}
    if {"hidden_size", "heads"} <= names and obj.hidden_size % obj.heads:
        raise ConfigError(f"config key '{prefix}hidden_size' = {obj.hidden_size}: must be divisible by "
                          f"'{prefix}heads' = {obj.heads}")
    if "device" in names and isinstance(obj.device, str) and not _valid_device(obj.device):
        raise ConfigError(f"config key '{prefix}device' = {obj.device!r}: expected auto, cpu, cuda or cuda:N")
    if isinstance(obj, EvalConfig):
        if not obj.ks or any(k < 1 for k in obj.ks):
            raise ConfigError(f"config key '{prefix}ks' = {obj.ks}: expected a list of cut-offs >= 1")
        if VALID_K not in obj.ks:
            raise ConfigError(f"config key '{prefix}ks' = {obj.ks}: must contain {VALID_K} (validation and early "
                              f"stopping use NDCG@{VALID_K})")
    if isinstance(obj, DistillConfig):
        w = obj.teacher_weights
        ok = w in ("valid_ndcg", "uniform") or (isinstance(w, list) and w and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in w) and sum(w) > 0)
        if not ok:
            raise ConfigError(f"config key '{prefix}teacher_weights' = {w!r}: expected \"valid_ndcg\", "
                              f"\"uniform\" or a list of non-negative weights (not all zero)")


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def without_later_options(d: dict, later: dict) -> dict:
    """`d` without the options in `later` (added after runs were fingerprinted, each with its "off" value) that
    are off, so that the fingerprints of the runs made before an option existed do not change."""
    return {k: v for k, v in d.items() if not (k in later and v == later[k])}


TRAIN_ADDED_LATER = {"ema": 0.0}
# data options added after prepared datasets were cached, with their "off" value (the cache key leaves them out)
DATA_ADDED_LATER = {"drop_short_users": False}
# distillation options added after runs were fingerprinted, each with the value that leaves the method as it was
DISTILL_ADDED_LATER: dict = {"max_instances": 0}
# model options added after runs were fingerprinted, with the value that leaves each model as it was
MODEL_ADDED_LATER: dict = {"negatives": 0}


def train_key(t: TrainConfig | dict) -> dict:
    """The training settings that change a result: how it runs and reports left out, and options added later
    left out while off (`without_later_options`)."""
    d = to_dict(t) if not isinstance(t, dict) else t
    return without_later_options({k: v for k, v in d.items() if k not in ("progress", "device", "threads")},
                                 TRAIN_ADDED_LATER)


def parse_value(text: str):
    """`--set` values: TOML literals (numbers, booleans, [lists], "strings"), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _list_entry(items: list, p: str, key: str) -> dict:
    """The entry `p` of a list of tables ([[teachers]]): its index, or the one whose `name` (else `family`) is `p`."""
    if p.isdigit():
        if int(p) >= len(items):
            raise ConfigError(f"--set {key}: index {p} is out of range (the list has {len(items)} entries)")
        entry = items[int(p)]
    else:
        named = [e for e in items if isinstance(e, dict) and e.get("name") == p]
        named = named or [e for e in items if isinstance(e, dict) and not e.get("name") and e.get("family") == p]
        if len(named) != 1:
            labels = [e.get("name") or e.get("family") if isinstance(e, dict) else e for e in items]
            raise ConfigError(f"--set {key}: {'no' if not named else 'more than one'} entry named '{p}' "
                              f"(entries: {labels}; an index 0-{len(items) - 1} also works)")
        entry = named[0]
    if not isinstance(entry, dict):
        raise ConfigError(f"--set {key}: entry '{p}' is not a section")
    return entry


def apply_override(data: dict, assignment: str) -> None:
    """`a.b.c=value`; a list of tables is entered by index or by its entries' name or family
    (`teachers.unim2rec.teacher.hidden_size=256`, `teachers.2.train.seed=1`)."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got '{assignment}'")
    key, text = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for p in parts[:-1]:
        node = _list_entry(node, p, key) if isinstance(node, list) else node.setdefault(p, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"--set {key}: '{p}' is not a section")
    if isinstance(node, list):
        raise ConfigError(f"--set {key}: '{parts[-2]}' is a list of sections; name one of its entries first")
    node[parts[-1]] = parse_value(text.strip())


def load_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    text = path.read_text()
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            out = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(out, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        return out
    if suffix == ".json":
        return json.loads(text)
    raise ConfigError(f"{path}: unknown config format '{suffix}' (expected .toml, .yaml, .yml or .json)")


def load(cls, path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None):
    """Load `cls` from an optional file, then apply `key=value` overrides (later ones win)."""
    data: dict = dict(base or {})
    if path:
        data = _deep_merge(data, load_file(path))
    for o in overrides or []:
        apply_override(data, o)
    return from_dict(cls, data)


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
