"""torch.compile for eyas' fused functions (the env step, APG's flights, the physics), made once per process and
device type, with the kernel cache in ``TORCHINDUCTOR_CACHE_DIR`` (default ``~/.cache/eyas/inductor``) and a
one-warning eager fallback. ``EYAS_COMPILE=0`` (or a config's ``compile=False``) keeps everything eager.

Inductor keeps its kernels in the cache, so a second run pays the tracing (seconds), not the first compile (~30-60 s
on 2 cores). Compiled and eager results agree to float rounding (inductor reorders and fuses arithmetic), not bit
for bit.
"""
from __future__ import annotations

import gc
import os
import warnings
from pathlib import Path

import torch

_COMPILED: dict = {}
# Inductor settings for the fused steps (measured on the 2-core CPU, benchmarks/README.md):
# * its C++ backend gives up vectorising a loop with many non-contiguous loads or stores (its tiling heuristic);
#   the (B, 4) actions are read across rows, so the heuristic would leave the whole fused step scalar (4x slower);
# * one fused loop instead of groups of at most 64 nodes: intermediates that stay inside a loop need no buffer,
#   and every buffer is an allocation per call (23 instead of ~100 for the env step);
# * training graphs (APG's flights) save at most half of what the forward computes for the backward, which
#   recomputes the rest (pointwise, cheap): fewer tensors allocated and handed over per step (1.2 -> 1.0 s per APG
#   step of 512 x 500).
# * the env step (no backward) with inductor's C++ wrapper: the step's outputs are stacks of (B,) rows, and the
#   wrapper makes one view per row (~120) on every call, ~1 us each in Python, a fraction of that in C++ (measured:
#   a 64-env step's call 168 -> 130 us). Training graphs keep the Python wrapper.
# On CUDA the first two do not apply (Triton kernels; one 4096-node fusion did not finish its first compile in
# 195 s on an H200 with torch 2.11): inductor's own defaults there.
INDUCTOR_OPTIONS = {"cpp.enable_tiling_heuristics": False, "max_fusion_size": 4096}
ACTIVATION_MEMORY_BUDGET = 0.5


def compile_enabled(setting: bool | None) -> bool:
    """The config's choice, or (None) the environment variable EYAS_COMPILE (default on; 0/false/no: eager)."""
    if setting is not None:
        return bool(setting)
    return os.environ.get("EYAS_COMPILE", "1").strip().lower() not in ("0", "false", "no", "off", "")


def mark_batch_dims(dim: int, *tensors: torch.Tensor) -> None:
    """Make dimension ``dim`` of ``tensors`` symbolic in the compile that reads them first (`step_function`)."""
    for t in tensors:
        torch._dynamo.maybe_mark_dynamic(t, dim)


def compiled_function(fn, training: bool = False, device: torch.device | str = "cpu", dynamic: bool | None = True):
    """``fn`` under torch.compile (inductor; ``dynamic``: every size symbolic, or None: the marked ones, and those
    seen to change), made once per process and device type, with the kernel cache in ``TORCHINDUCTOR_CACHE_DIR``
    (default ``~/.cache/eyas/inductor``) and a one-warning eager fallback. ``training``: its backward runs too (the
    activation budget above applies). ``INDUCTOR_OPTIONS`` on the CPU only."""
    kind = torch.device(device).type
    if (fn, kind) not in _COMPILED:
        _use_eyas_cache_dir()
        options = (INDUCTOR_OPTIONS | ({} if training else {"cpp_wrapper": True})) if kind == "cpu" else None
        compiled = call = torch.compile(fn, dynamic=dynamic, options=options)
        if training:
            def call(*args, **kwargs):
                with torch._functorch.config.patch(activation_memory_budget=ACTIVATION_MEMORY_BUDGET):
                    return compiled(*args, **kwargs)

        _COMPILED[fn, kind] = _with_eager_fallback(fn, call)
    return _COMPILED[fn, kind]


def freeze_long_lived_objects() -> None:
    """Collect, then move every object alive now into the collector's permanent generation (`gc.freeze`), so that
    later full collections skip them. Called once the compiled graphs of a loop exist: torch.compile holds ~0.5 M
    long-lived Python objects, and an APG flight keeps every step's outputs alive until its backward, so they survive
    into the oldest generation and trigger full collections, each of which would otherwise traverse all of them.
    Objects frozen here are still freed when their last reference goes; only cycles among them outlive the process's
    collections."""
    gc.collect()
    gc.freeze()


def _use_eyas_cache_dir() -> None:
    """Point inductor's cache at ~/.cache/eyas/inductor unless the user chose one. Importing tensordict already
    resolves (and writes to the environment) torch's default, /tmp/torchinductor_<user>, which a reboot clears;
    that value counts as not chosen."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path.home() / ".cache" / "eyas" / "inductor")


def _with_eager_fallback(eager, fn):
    state = {"fn": fn}

    def call(*args, **kwargs):
        try:
            return state["fn"](*args, **kwargs)
        except Exception as e:  # noqa: BLE001  (any compiler failure: missing C++ compiler, unsupported op, ...)
            if state["fn"] is eager:
                raise
            warnings.warn(f"eyas: torch.compile of {eager.__module__}.{eager.__name__} failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''}); running it eager (EYAS_COMPILE=0 "
                          f"silences this)", RuntimeWarning, stacklevel=2)
            state["fn"] = eager
            return eager(*args, **kwargs)

    return call
