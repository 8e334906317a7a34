"""`eyas export CHECKPOINT --out DIR`: the student in every deployment format, each with its example pair.

Formats (file in DIR): ``h5`` policy.h5 (rl-tools HDF5 layout, foundation_policy), ``header`` policy.h
(rl-tools' ``save_code``: ``rl_tools::checkpoint::actor``, ``example``, ``meta``; PX4 MC_RAPTOR_EMBED_POLICY,
Crazyflie, Betaflight), ``tar`` policy.tar (rl-tools' tar backend; PX4 mc_raptor's SD-card file), ``onnx``
policy.onnx (obs [B, obs], h_in [1, B, 16] -> actions, h_out) and ``torchscript`` policy.pt (``reset()``,
``forward(obs)``, ``step(obs, h)``). policy.h and policy.tar are written by rl-tools' own code through the
bridge (eyas._rltools). The example (500 x 2 x obs) is the source's own example where it has one, else seeded
normal noise; its output is computed by rl-tools from the exported float32 weights and checked against PyTorch.
Every check is made before DIR is touched; every file goes to a temporary file that is renamed only once all
of them are complete (eyas.io), so a failure leaves DIR as it was: never a half-written export.
See docs/deployment.md."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import tarfile
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import torch

from eyas.cli_args import ArgumentParser, at_least, run_command
from eyas.errors import EyasError
from eyas.io import atomic_path
from eyas.model import StudentPolicy
from eyas.rltools_h5 import RAPTOR_OBSERVATION

FORMATS = {"h5": "policy.h5", "header": "policy.h", "tar": "policy.tar", "onnx": "policy.onnx",
           "torchscript": "policy.pt"}
MOTOR_ORDER = ["front-right", "back-right", "back-left", "front-left"]
CONTROL_PERIOD_S = 0.01
EXAMPLE_SHAPE = (500, 2)  # rl-tools' exporter: 500 steps x 2 sequences
# PyTorch float32 vs rl-tools float32 on the same weights differ by summation order only: <= 5e-7 on RAPTOR's
# example (README). 1e-5 is 20x that and far below any control-relevant action difference (actions in
# [-1, 1]); a wrong weight, gate order or reset state gives 1e-3 and more (tests/test_export.py).
SELF_CHECK_TOLERANCE = 1e-5


class ExportError(EyasError, ValueError):
    """Bad input for `eyas export`: reported as one line, exit status 2."""


@dataclass
class Export:
    policy: StudentPolicy  # float32
    name: str
    contract: dict
    example_input: np.ndarray
    example_output: np.ndarray  # computed by rl-tools from the float32 weights


def load_student(path: str | Path) -> tuple[StudentPolicy, np.ndarray | None]:
    """A student from an rl-tools ``.h5`` actor or an `eyas distill` ``.pt``; and the source's example input."""
    import h5py

    from eyas.rltools_h5 import RLToolsH5Error, load_rltools_h5, read_example

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: {'is a directory' if path.is_dir() else 'no such file'}")
    if h5py.is_hdf5(path):
        try:
            policy = load_rltools_h5(path)
        except RLToolsH5Error as e:
            raise ExportError(f"not a student checkpoint: {e}") from e
        try:
            example = read_example(path)[0].astype(np.float32)
        except RLToolsH5Error:
            example = None
        return policy, example
    from eyas.distill.checkpoint import read_student_pt

    policy, meta = read_student_pt(path, ExportError)
    policy.meta = meta
    return policy, None


def _bridge():
    try:
        from eyas import _rltools
    except ImportError as e:  # pragma: no cover - only without a built extension
        raise ExportError(f"the rl-tools bridge eyas._rltools is not built ({e}); reinstall eyas") from e
    return _rltools


def _observation_layout(policy: StudentPolicy, override: str | None) -> str:
    if override:
        return override
    meta = getattr(policy, "meta", None)
    if isinstance(meta, dict) and isinstance(meta.get("environment"), dict):
        layout = meta["environment"].get("observation")
        if isinstance(layout, str) and layout:
            return layout
    if policy.num_obs == 22:
        return RAPTOR_OBSERVATION
    raise ExportError(f"the checkpoint does not name its observation layout ({policy.num_obs} observations): "
                      f"pass --observation")


def io_contract(policy: StudentPolicy, observation: str) -> dict:
    """The deployment contract stored in every format's metadata."""
    h0 = policy.initial_hidden_state.detach().to(torch.float32).tolist()
    return {"observation": observation, "observation_dim": policy.num_obs, "action_dim": policy.num_actions,
            "action_range": [-1.0, 1.0], "motor_order": MOTOR_ORDER, "frame": "FLU",
            "control_period_s": CONTROL_PERIOD_S, "hidden_dim": policy.hidden_dim, "initial_hidden_state": h0}


def prepare(checkpoint: str | Path, observation: str | None = None, seed: int = 0) -> Export:
    """Load, check the widths rl-tools was compiled for, and compute the example pair (nothing written)."""
    policy, example = load_student(checkpoint)
    policy = policy.to(torch.float32)
    bridge = _bridge()
    exporter_cls = getattr(bridge, f"Exporter_obs{policy.num_obs}", None)
    if policy.hidden_dim != 16 or policy.num_actions != 4 or exporter_cls is None:
        widths = sorted(int(n.split("obs")[1]) for n in dir(bridge) if n.startswith("Exporter_obs"))
        raise ExportError(f"{checkpoint}: the student maps {policy.num_obs} observations to {policy.num_actions} "
                          f"actions with {policy.hidden_dim} GRU units; rl-tools' exporter is compiled for "
                          f"{widths} observations -> 4 actions with 16 units (cpp_bridge/module.cpp)")
    contract = io_contract(policy, _observation_layout(policy, observation))
    if example is None or example.shape != (*EXAMPLE_SHAPE, policy.num_obs):
        example = np.random.default_rng(seed).standard_normal((*EXAMPLE_SHAPE, policy.num_obs)).astype(np.float32)
    params = {k: v.detach().numpy().astype(np.float32) for k, v in policy.rltools_parameters().items()}
    output = exporter_cls(params, np.ascontiguousarray(example)).example_output()
    policy.reset()
    with torch.no_grad():
        torch_output = policy(torch.from_numpy(example)).numpy()
    err = float(np.abs(torch_output - output).max())
    if not err <= SELF_CHECK_TOLERANCE:
        raise ExportError(f"PyTorch and rl-tools disagree on the example by {err:.2e} (> {SELF_CHECK_TOLERANCE})")
    name = getattr(policy, "checkpoint_name", None) or Path(checkpoint).stem
    return Export(policy, name, contract, example, output)


def _meta_json(ex: Export) -> str:
    return json.dumps({"environment": {"name": "l2f", "observation": ex.contract["observation"]},
                       **ex.contract, "exported_by": "eyas export"})


def _exporter(ex: Export):
    params = {k: v.detach().numpy().astype(np.float32) for k, v in ex.policy.rltools_parameters().items()}
    return getattr(_bridge(), f"Exporter_obs{ex.policy.num_obs}")(params, ex.example_input)


def header_text(ex: Export) -> str:
    """policy.h by rl-tools' save_code; meta: name, commit_hash, and the I/O contract as C strings."""
    c = ex.contract
    meta = [("observation", c["observation"]), ("action_range", "[-1, 1]"),
            ("motor_order", ",".join(MOTOR_ORDER)), ("control_period_s", repr(CONTROL_PERIOD_S)),
            ("io_contract", json.dumps(c))]
    return _exporter(ex).header(ex.name, meta)


def tar_bytes(ex: Export) -> bytes:
    """policy.tar by rl-tools' tar backend (actor group with checkpoint_name and meta, example group)."""
    return _exporter(ex).tar(ex.name, _meta_json(ex))


def _tar_members(data: bytes, path) -> dict[str, bytes]:
    try:
        with tarfile.open(fileobj=BytesIO(data)) as t:
            return {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    except (tarfile.TarError, OSError) as e:
        raise ExportError(f"{path}: not a tar archive ({e})") from e


def load_tar(path: str | Path) -> dict:
    """policy.tar read back by rl-tools' tar loader (the PX4 mc_raptor path): parameters, example pair, and the
    example output recomputed by rl-tools. rl-tools aborts the process on an archive that does not match the
    compiled shapes, so every entry's metadata and size are first compared with what rl-tools itself writes."""
    data = Path(path).read_bytes()
    members = _tar_members(data, path)
    fields = dict(line.split(": ", 1) for line in
                  members.get("actor/layers/0/weights/parameters/meta", b"").decode(errors="replace").splitlines()
                  if ": " in line)
    num_obs = int(fields.get("cols", fields.get("dim_1", "0")) or 0)
    exporter = getattr(_bridge(), f"Exporter_obs{num_obs}", None)
    if exporter is None:
        raise ExportError(f"{path}: not an rl-tools student policy.tar for the compiled widths (22, 26 observations)")
    zeros = {k: np.zeros(v.shape, np.float32) for k, v in StudentPolicy(num_obs, 4).rltools_parameters().items()}
    layout = _tar_members(exporter(zeros, np.zeros((*EXAMPLE_SHAPE, num_obs), np.float32)).tar("", "{}"), "layout")
    for name, ref in layout.items():
        got = members.get(name)
        if name == "actor/meta":  # the attributes rl-tools' get_attribute reads
            lines = (got or b"").decode(errors="replace").splitlines()
            same = all(any(line.startswith(f"{key}: ") for line in lines) for key in ("checkpoint_name", "meta"))
        elif name.endswith("/meta"):  # type, dtype and shape
            same = got == ref
        else:
            same = got is not None and len(got) == len(ref)
        if not same:
            raise ExportError(f"{path}: entry {name} is missing or does not match rl-tools' layout")
    return getattr(_bridge(), f"load_tar_obs{num_obs}")(data)


# Each writer below fills a temporary path that write_all renames into DIR (eyas.io.atomic_path).
def _write_h5(ex: Export, tmp: Path) -> None:
    from eyas.rltools_h5 import save_rltools_h5

    save_rltools_h5(ex.policy, tmp, meta=_meta_json(ex), checkpoint_name=ex.name,
                    example_input=ex.example_input, example_output=ex.example_output)


def _deployed(ex: Export):
    from eyas.deployed import DeployedPolicy

    return DeployedPolicy(ex.policy, json.dumps(ex.contract), torch.from_numpy(ex.example_input),
                          torch.from_numpy(ex.example_output))


def _write_torchscript(ex: Export, tmp: Path) -> None:
    module = torch.jit.script(_deployed(ex))
    torch.jit.save(module, str(tmp), _extra_files={"io_contract.json": json.dumps(ex.contract)})


def _write_onnx(ex: Export, tmp: Path) -> None:
    import onnx

    from eyas.deployed import OnnxStep

    step = OnnxStep(_deployed(ex)).eval()
    obs = torch.from_numpy(ex.example_input[0])
    h = step.deployed.initial_state(obs.shape[0])
    # TorchScript-based exporter: dynamo=True has exported GRUs with linear_before_reset=0 (docs/deployment.md);
    # DeployedPolicy writes the GRU with plain ops anyway, and the test checks any GRU node.
    torch.onnx.export(step, (obs, h), str(tmp), dynamo=False, opset_version=18,
                      input_names=["obs", "h_in"], output_names=["actions", "h_out"],
                      dynamic_axes={"obs": {0: "batch"}, "h_in": {1: "batch"},
                                    "actions": {0: "batch"}, "h_out": {1: "batch"}})
    model = onnx.load(str(tmp))
    props = {"initial_hidden_state": json.dumps(ex.contract["initial_hidden_state"]),
             "io_contract": json.dumps(ex.contract), "checkpoint_name": ex.name,
             "example_input": json.dumps(ex.example_input.tolist()),
             "example_output": json.dumps(ex.example_output.tolist())}
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(tmp))


def write_all(ex: Export, out: Path, formats: list[str]) -> list[Path]:
    """Compute the header and tar, then write every file to a temporary beside its target and rename them all
    only once every one is complete: on a failure DIR is left as it was (earlier files there untouched)."""
    if "onnx" in formats and importlib.util.find_spec("onnx") is None:
        raise ExportError("policy.onnx needs the onnx package: pip install onnx (or leave onnx out of --formats)")
    header = header_text(ex) if "header" in formats else None
    tar = tar_bytes(ex) if "tar" in formats else None
    writers = {"h5": lambda p: _write_h5(ex, p), "header": lambda p: p.write_text(header),
               "tar": lambda p: p.write_bytes(tar), "onnx": lambda p: _write_onnx(ex, p),
               "torchscript": lambda p: _write_torchscript(ex, p)}
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: not a directory")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"--out {out}: cannot create the directory ({e.strerror or e})") from e
    fmt = formats[0]
    try:
        with contextlib.ExitStack() as stack:  # unwinds every atomic_path: all renamed, or all deleted
            for fmt in formats:
                writers[fmt](stack.enter_context(atomic_path(out / FORMATS[fmt], suffix=Path(FORMATS[fmt]).suffix)))
    except BaseException as e:  # a failed write or an interrupt: the directory as it was
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        if isinstance(e, OSError):
            raise ExportError(f"--out {out}: cannot write {FORMATS[fmt]} ({e.strerror or e})") from e
        raise
    return [out / FORMATS[f] for f in formats]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="eyas export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="student .h5 (rl-tools layout) or .pt (eyas distill checkpoint)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of {','.join(FORMATS)}")
    parser.add_argument("--observation", help="observation layout string (default: the checkpoint's meta)")
    parser.add_argument("--seed", type=at_least(0), default=0, help="seed of the example input when the source has none")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"--formats: unknown format {unknown[0] if unknown else '(none)'!r}; "
                          f"choose from {','.join(FORMATS)}")
    torch.set_num_threads(1)
    with warnings.catch_warnings():  # torch's deprecation notes on torch.jit / the TorchScript ONNX exporter
        warnings.simplefilter("ignore", DeprecationWarning)
        written = write_all(prepare(args.checkpoint, args.observation, args.seed), Path(args.out), formats)
    for path in written:
        print(f"{path}  {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(run_command("export", main, sys.argv[1:]))
