"""`load_teacher` / `load_teacher_set`: read rsl_rl checkpoints and rl-tools HDF5 actors as `Teacher`s."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .base import Teacher, TeacherError
from .rltools_io import load_rltools_actor
from .rsl_rl_io import SIDECAR, load_rsl_rl_checkpoint, read_sidecar

if TYPE_CHECKING:
    from .bank import RecurrentTeacher

RSL_RL_SUFFIXES = (".pt", ".pth")
HDF5_SUFFIXES = (".h5", ".hdf5")


def params_from_l2f(dynamics: dict | str | os.PathLike) -> Any:
    """`eyas.sim.Params` from an l2f parameter JSON (dict or file path)."""
    from eyas.sim import Params  # the env package; imported lazily so loaders work without it

    if isinstance(dynamics, (str, os.PathLike)):
        dynamics = json.loads(Path(dynamics).read_text())
    return Params.from_l2f_json(dynamics)


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def latest_checkpoint(directory: Path) -> Path | None:
    """The `model_<it>.pt` with the highest iteration in `directory`, or None."""
    found = [(int(m.group(1)), p) for p in directory.glob("model_*.pt") if (m := re.fullmatch(r"model_(\d+)\.pt", p.name))]
    return max(found)[1] if found else None


def resolve_checkpoint(path: Path) -> Path:
    """The checkpoint file a teacher path refers to (a file, or a run directory with teacher.json / model_*.pt)."""
    if path.is_file():
        return path
    if path.is_dir():
        sidecar = path / SIDECAR
        if sidecar.is_file():
            meta = read_sidecar(path)
            if meta and meta.get("checkpoint"):
                ckpt = path / meta["checkpoint"]
                if not ckpt.is_file():
                    raise TeacherError(f"{sidecar} names checkpoint {meta['checkpoint']!r}, which does not exist")
                return ckpt
        ckpt = latest_checkpoint(path)
        if ckpt is not None:
            return ckpt
        h5 = sorted(p for p in path.iterdir() if p.suffix in HDF5_SUFFIXES)
        if len(h5) == 1:
            return h5[0]
        raise TeacherError(f"{path} is not a teacher directory (no {SIDECAR}, model_*.pt or single .h5 actor)")
    raise TeacherError(f"teacher path {path} does not exist")


def load_teacher(
    path: str | os.PathLike,
    *,
    obs_group: str | None = None,
    params: Any = None,
    activation: str | None = None,
    obs_slice: tuple[int, int] | None = None,
    device: str = "cpu",
) -> Teacher:
    """Load one teacher from an rsl_rl checkpoint (`.pt`), an rl-tools actor (`.h5`) or a teacher run directory.

    `obs_group`, `params` and `activation` override what the sidecar `teacher.json` says. `params` may be an
    `eyas.sim.Params`, an l2f parameter dict, or a path to an l2f JSON file. `obs_slice` (start, stop) makes the
    teacher read only those columns of its observation group.
    """
    ckpt = resolve_checkpoint(Path(path))
    sidecar = read_sidecar(ckpt) or {}
    if ckpt.suffix in RSL_RL_SUFFIXES:
        net, info, _ = load_rsl_rl_checkpoint(ckpt, activation=activation)
        num_obs = net[0].mean.shape[-1] if info["normaliser"] is not None else info["layers"][0][0].shape[1]
        num_actions = info["num_actions"]
        meta = {"format": "rsl_rl", "layout": info["layout"], "activation": info["activation"], "iter": info["iter"]}
        default_group = "teacher"
    elif ckpt.suffix in HDF5_SUFFIXES:
        net, num_obs, num_actions, meta = load_rltools_actor(ckpt)
        meta["format"] = "rl_tools"
        default_group = "teacher"
        own = ckpt.with_suffix(".json")  # per-actor l2f dynamics file, e.g. 17.h5 + 17.json
        if params is None and own.is_file() and not sidecar.get("dynamics"):
            params = own
    else:
        raise TeacherError(f"unknown teacher file type {ckpt.suffix!r} for {ckpt} (expected .pt or .h5)")
    if not all(bool(t.isfinite().all()) for t in net.state_dict().values() if t.is_floating_point()):
        raise TeacherError(f"{ckpt}: the teacher's parameters contain NaN or inf")
    if int(num_obs) != int(sidecar.get("num_obs", num_obs)):
        raise TeacherError(f"{ckpt}: network input is {num_obs} wide but {SIDECAR} says num_obs={sidecar['num_obs']}")
    if params is None and sidecar.get("dynamics"):
        params = sidecar["dynamics"]
    if isinstance(params, (dict, str, os.PathLike)):
        try:
            params = params_from_l2f(params)
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise TeacherError(f"{ckpt}: cannot read the teacher's dynamics parameters: {e}") from e
    meta.update({k: sidecar[k] for k in ("mode", "env_cfg", "training", "evaluation") if k in sidecar})
    name = sidecar.get("name") or (ckpt.parent.name if ckpt.name.startswith("model_") else ckpt.stem)
    teacher = Teacher(
        net,
        num_obs=int(num_obs),
        num_actions=num_actions,
        obs_group=obs_group or sidecar.get("obs_group", default_group),
        params=params,
        name=name,
        source=str(ckpt),
        meta=meta,
        obs_slice=obs_slice,
    )
    return teacher.to(device)


def _is_teacher_entry(p: Path) -> bool:
    if p.is_file():
        return p.suffix in RSL_RL_SUFFIXES + HDF5_SUFFIXES
    return p.is_dir() and ((p / SIDECAR).is_file() or latest_checkpoint(p) is not None)


def load_teacher_set(
    source: str | os.PathLike | Iterable[str | os.PathLike], *, device: str = "cpu", **kwargs: Any
) -> list[Teacher]:
    """Teachers from a file, a teacher run directory, a directory of teachers, or a list of those.

    A directory that is not itself a teacher is scanned one level deep for `.pt`/`.h5` files and teacher
    directories, in natural name order. Raises `TeacherError` if nothing is found.
    """
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if not root.exists():
            raise TeacherError(f"teacher path {root} does not exist")
        if root.is_file() or _is_teacher_entry(root):
            entries = [root]
        else:
            entries = sorted((p for p in root.iterdir() if _is_teacher_entry(p)), key=_natural_key)
            if not entries:
                raise TeacherError(f"no teachers (.pt, .h5 or teacher directories) found in {root}")
    else:
        entries = [Path(p) for p in source]
        if not entries:
            raise TeacherError("empty teacher list")
    return [load_teacher(p, device=device, **kwargs) for p in entries]


def is_gru_student_file(path) -> bool:
    """True for an rl-tools HDF5 file whose actor contains a GRU layer (a student, not an MLP teacher)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            layers = f["actor"]["layers"]
            return any(str(layers[k].attrs.get("type", "")) == "gru" for k in layers)
    except (OSError, KeyError, TypeError):
        return False


def load_recurrent_teacher(path) -> "RecurrentTeacher":
    """An rl-tools GRU student checkpoint (.h5) as a teacher; ``"foundation_policy"`` means the released RAPTOR
    checkpoint of the foundation-policy package."""
    from eyas.rltools_h5 import RLToolsH5Error, load_rltools_h5, raptor_checkpoint_path

    from .bank import RecurrentTeacher

    if str(path) == "foundation_policy":
        try:
            path = raptor_checkpoint_path()
        except ImportError as e:
            raise TeacherError("teacher 'foundation_policy' needs the foundation-policy package") from e
    try:
        policy = load_rltools_h5(path)
    except (RLToolsH5Error, OSError, KeyError) as e:
        raise TeacherError(f"cannot load recurrent teacher {path}: {e}") from e
    return RecurrentTeacher(policy, name=Path(str(path)).stem, source=str(path))


def load_teachers(sources: Iterable, device: str = "cpu") -> list:
    """Teachers for distillation from files, teacher run directories or directories of teachers (`load_teacher_set`),
    plus rl-tools GRU students (.h5, or ``foundation_policy``) as `RecurrentTeacher`s."""
    out = []
    for source in sources:
        path = Path(str(source))
        if str(source) == "foundation_policy" or (path.is_file() and path.suffix in HDF5_SUFFIXES
                                                  and is_gru_student_file(path)):
            out.append(load_recurrent_teacher(source).to(device))
            continue
        try:
            out.extend(load_teacher_set(str(source), device=str(device)))
        except TeacherError as e:
            raise TeacherError(f"cannot load teachers: {e}") from e
        except OSError as e:
            raise TeacherError(f"cannot read teacher {source}: {e}") from e
    if not out:
        raise TeacherError("no teachers found in " + ", ".join(map(str, sources)))
    return out
