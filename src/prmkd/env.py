"""What machine and code produced a result."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(path: str | Path | None = None) -> str | None:
    here = Path(path or Path(__file__).resolve().parent)
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    # cpu_bf16: whether this CPU computes bfloat16 natively (where not, a `bf16 = true` teacher ran in float32)
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu, "torch_threads": torch.get_num_threads(),
            "cpu_bf16": bf16_native("cpu")}


def environment() -> dict:
    import numpy
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "platform": platform.platform(), "machine": machine(), "commit": git_commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def resolve_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(name)
    return torch.device(name)


def check_device(name: str) -> None:
    """A device that this machine does not have is a clear error before any work (not a CUDA traceback)."""
    if not name.startswith("cuda"):
        return
    import torch

    from .errors import ConfigError

    if not torch.cuda.is_available():
        raise ConfigError(f"train.device = '{name}', but this machine has no CUDA device (use auto or cpu)")
    idx = name.partition(":")[2]
    if idx and int(idx) >= torch.cuda.device_count():
        raise ConfigError(f"train.device = '{name}', but this machine has {torch.cuda.device_count()} CUDA device(s)")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo: x86 `flags`, Arm `Features`); empty where unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_native(device) -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 / AMX-BF16
    (x86) or BF16 (Arm). Detected, never assumed: without them bfloat16 autocast is emulated and several times
    slower than float32."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})
