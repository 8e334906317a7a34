"""`eyas export`: every deployment format reproduces the PyTorch student step by step, with resets.

Tolerances: the formats evaluate the same float32 weights with different summation orders (rl-tools' loops,
onnxruntime's and PyTorch's kernels); float32 rounding then differs by a few ulps per operation, ~1e-7 on
actions of order 1 (README: RAPTOR's example to 5e-7). Over 300 recurrent steps the GRU is contractive, so the
difference does not grow; 1e-5 bounds it with a 20x margin, while a wrong weight, gate order, reset state or
linear_before_reset=0 gives 1e-3 and more (test_reset_state_matters shows the size of a reset error). Files
read back bit-exactly (tar parameters, example pair) are held to 1e-6 or exact equality."""
import json
import os
import shutil
import subprocess
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import eyas
from eyas import export
from eyas.cli import COMMANDS
from eyas.cli import main as eyas_main

STEP_TOL = 1e-5  # different float32 summation orders, 300 steps (module docstring)
READBACK_TOL = 1e-6  # the same float32 numbers read back, or recomputed by the same rl-tools code
STEPS, RESET_AT = 300, 150
CHECK_CPP = Path(__file__).with_name("export_check.cpp")


def run_export(argv: list[str]) -> int:
    """`eyas export ARGV`'s exit status."""
    return eyas_main(["export", *argv])


def _student_pt(path: Path) -> Path:
    """A random student with a non-zero learned initial state, as `eyas distill` saves it."""
    policy = eyas.StudentPolicy(22, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        policy.initial_hidden_state.copy_(torch.randn(16, generator=torch.Generator().manual_seed(4)) * 0.5)
    torch.save({"state_dict": policy.state_dict(), "num_obs": 22, "num_actions": 4, "hidden_dim": 16}, path)
    return path


@pytest.fixture(scope="module", params=["raptor", "student"])
def exported(request, tmp_path_factory):
    """(source checkpoint, the float32 StudentPolicy it holds, export directory)."""
    tmp = tmp_path_factory.mktemp(request.param)
    source = eyas.raptor_checkpoint_path() if request.param == "raptor" else _student_pt(tmp / "actor.pt")
    out = tmp / "export"
    assert run_export([str(source), "--out", str(out)]) == 0
    policy, _ = export.load_student(source)
    return source, policy.float(), out


def _sequences(batch: int, per_row_resets: bool, seed: int = 0):
    g = np.random.default_rng(seed)
    x = g.standard_normal((STEPS, batch, 22)).astype(np.float32)
    if per_row_resets:
        reset = g.random((STEPS, batch)) < 0.02
        reset[RESET_AT, 0] = True
    else:
        reset = np.zeros((STEPS, batch), bool)
        reset[RESET_AT] = True
    reset[0] = False  # every format starts from the initial state anyway
    return x, reset


def _reference(policy, x, reset):
    policy.reset()
    with torch.no_grad():
        return policy(torch.from_numpy(x), reset=torch.from_numpy(reset)).numpy()


def _rltools_include() -> str:
    spec = importlib.util.find_spec("rltools")
    if spec is None:
        pytest.skip("the rltools package (rl-tools headers) is not installed: pip install rltools==2.2.1")
    return os.path.join(spec.submodule_search_locations[0], "external", "rl_tools", "include")


def test_header_compiles_and_matches_pytorch(exported, tmp_path):
    source, policy, out = exported
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++ / c++) on PATH: the exported policy.h cannot be compiled here")
    binary = tmp_path / "check"
    subprocess.run([compiler, "-std=c++17", "-O1", "-I", str(out), "-isystem", _rltools_include(),
                    str(CHECK_CPP), "-o", str(binary)], check=True, capture_output=True, timeout=300)
    x, reset = _sequences(2, per_row_resets=False)
    steps = tmp_path / "steps.txt"
    rows = [f"{int(reset[t, 0])} " + " ".join(f"{v:.9g}" for v in x[t].ravel()) for t in range(STEPS)]
    steps.write_text(f"{STEPS}\n" + "\n".join(rows) + "\n")
    run = subprocess.run([str(binary), str(steps)], check=True, capture_output=True, text=True, timeout=60)
    lines = run.stdout.splitlines()
    assert lines[0].startswith("example_max_abs_diff ")
    assert float(lines[0].split()[1]) <= READBACK_TOL  # the embedded example, by rl-tools' evaluate
    assert export.RAPTOR_OBSERVATION in lines[1]
    cpp = np.array([[float(v) for v in line.split()] for line in lines[2:]]).reshape(STEPS, 2, 4)
    assert np.abs(cpp - _reference(policy, x, reset)).max() <= STEP_TOL


def test_tar_loads_back_with_rltools_loader(exported):
    source, policy, out = exported
    loaded = export.load_tar(out / "policy.tar")
    for name, value in policy.rltools_parameters().items():
        assert np.abs(loaded["parameters"][name] - value.detach().numpy().reshape(loaded["parameters"][name].shape)
                      ).max() <= READBACK_TOL, name
    assert np.abs(loaded["recomputed_output"] - loaded["example_output"]).max() <= READBACK_TOL
    policy.reset()
    with torch.no_grad():
        torch_out = policy(torch.from_numpy(loaded["example_input"])).numpy()
    assert np.abs(torch_out - loaded["example_output"]).max() <= STEP_TOL
    meta = json.loads(loaded["meta"])
    assert meta["observation"] == export.RAPTOR_OBSERVATION and meta["control_period_s"] == 0.01
    assert meta["motor_order"] == ["front-right", "back-right", "back-left", "front-left"]
    assert np.allclose(meta["initial_hidden_state"], policy.initial_hidden_state.detach().numpy(), atol=0)


def test_damaged_tar_is_refused_not_aborted(tmp_path):
    """rl-tools' loader aborts the process on a mismatching archive: load_tar checks the layout first."""
    import io
    import tarfile

    out = tmp_path / "e"
    assert run_export([str(_student_pt(tmp_path / "actor.pt")), "--out", str(out), "--formats", "tar"]) == 0
    with tarfile.open(out / "policy.tar") as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(damaged, "w", format=tarfile.USTAR_FORMAT) as t:
        for m, content in members:
            if m.name == "actor/layers/1/weights_hidden/parameters/data":
                content = content[:-4]
            m.size = len(content)
            t.addfile(m, io.BytesIO(content))
    with pytest.raises(export.ExportError, match="weights_hidden"):
        export.load_tar(damaged)
    (tmp_path / "text.tar").write_text("no")
    with pytest.raises(export.ExportError):
        export.load_tar(tmp_path / "text.tar")


def _onnx_session(path: Path):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run_steps(step, h0, x, reset):
    """Step a (obs, h) -> (actions, h') function over x with per-row resets to h0 (numpy in and out)."""
    h = np.repeat(h0, x.shape[1], axis=1)
    outs = []
    for t in range(x.shape[0]):
        h = np.where(reset[t][None, :, None], h0, h)
        a, h = step(x[t], h)
        outs.append(a)
    return np.stack(outs)


def test_onnx_sequences_with_per_row_resets(exported):
    import onnx
    source, policy, out = exported
    model = onnx.load(str(out / "policy.onnx"))
    onnx.checker.check_model(model)
    gru = [n for n in model.graph.node if n.op_type == "GRU"]
    assert all(any(a.name == "linear_before_reset" and a.i == 1 for a in n.attribute) for n in gru)
    assert [i.name for i in model.graph.input] == ["obs", "h_in"]
    assert [o.name for o in model.graph.output] == ["actions", "h_out"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    meta = {p.key: p.value for p in model.metadata_props}
    h0 = np.array(json.loads(meta["initial_hidden_state"]), np.float32).reshape(1, 1, 16)
    assert np.array_equal(h0.ravel(), policy.initial_hidden_state.detach().numpy())
    session = _onnx_session(out / "policy.onnx")
    step = lambda o, h: session.run(["actions", "h_out"], {"obs": o, "h_in": h.astype(np.float32)})
    x, reset = _sequences(3, per_row_resets=True)
    assert np.abs(_run_steps(step, h0, x, reset) - _reference(policy, x, reset)).max() <= STEP_TOL
    ex_in = np.array(json.loads(meta["example_input"]), np.float32)
    ex_out = np.array(json.loads(meta["example_output"]), np.float32)
    assert np.abs(_run_steps(step, h0, ex_in, np.zeros(ex_in.shape[:2], bool)) - ex_out).max() <= STEP_TOL


def test_torchscript_sequences_with_per_row_resets(exported):
    source, policy, out = exported
    m = torch.jit.load(str(out / "policy.pt"))
    h0 = m.initial_state(1).numpy()
    assert np.array_equal(h0.ravel(), policy.initial_hidden_state.detach().numpy())
    assert json.loads(m.io_contract)["initial_hidden_state"] == h0.ravel().tolist()

    def step(o, h):
        a, h2 = m.step(torch.from_numpy(o), torch.from_numpy(h))
        return a.numpy(), h2.numpy()

    x, reset = _sequences(3, per_row_resets=True)
    reference = _reference(policy, x, reset)
    assert np.abs(_run_steps(step, h0, x, reset) - reference).max() <= STEP_TOL
    # stateful forward: reset() returns to the learned initial state
    m.reset(3)
    first = [m(torch.from_numpy(x[t])).numpy() for t in range(5)]
    m.reset(3)
    assert np.array_equal(m.hidden.numpy(), np.repeat(h0, 3, axis=1))
    again = [m(torch.from_numpy(x[t])).numpy() for t in range(5)]
    assert np.array_equal(np.stack(first), np.stack(again))
    assert np.abs(np.stack(first) - _reference(policy, x[:5], np.zeros((5, 3), bool))).max() <= STEP_TOL
    assert np.abs(_run_steps(step, h0, m.example_input.numpy(), np.zeros((500, 2), bool))
                  - m.example_output.numpy()).max() <= STEP_TOL


def test_reset_state_matters(tmp_path):
    """The tolerance is meaningful: resetting to zeros instead of the learned initial state is caught."""
    source = _student_pt(tmp_path / "actor.pt")
    assert run_export([str(source), "--out", str(tmp_path / "e"), "--formats", "torchscript"]) == 0
    policy, _ = export.load_student(source)
    m = torch.jit.load(str(tmp_path / "e" / "policy.pt"))
    step = lambda o, h: tuple(t.numpy() for t in m.step(torch.from_numpy(o), torch.from_numpy(h)))
    x, reset = _sequences(3, per_row_resets=True)
    reference = _reference(policy, x, reset)
    assert np.abs(_run_steps(step, m.initial_state(1).numpy(), x, reset) - reference).max() <= STEP_TOL
    wrong = _run_steps(step, np.zeros((1, 1, 16), np.float32), x, reset)
    assert np.abs(wrong - reference).max() > 100 * STEP_TOL


def test_raptor_round_trips_and_reproduces_its_own_example(tmp_path):
    import foundation_policy as fp
    from eyas.rltools_h5 import load_rltools_h5, read_example

    source = eyas.raptor_checkpoint_path()
    out = tmp_path / "raptor"
    assert run_export([str(source), "--out", str(out), "--formats", "h5,tar"]) == 0
    ex_in, ex_out = read_example(source)
    new_in, new_out = read_example(out / "policy.h5")
    assert np.array_equal(new_in, ex_in)  # the released example input is kept
    assert np.abs(new_out - ex_out).max() <= READBACK_TOL  # rl-tools' output, as the release was made
    reloaded = load_rltools_h5(out / "policy.h5")
    original = load_rltools_h5(source)
    for name, value in original.rltools_parameters().items():
        assert torch.equal(reloaded.rltools_parameters()[name], value), name
    assert json.loads(reloaded.meta_text)["environment"]["observation"] == export.RAPTOR_OBSERVATION
    fp.load(str(out / "policy.h5"))  # foundation_policy checks the example itself (mean |diff| < 1e-6)
    loaded = export.load_tar(out / "policy.tar")
    assert np.abs(loaded["recomputed_output"] - ex_out).max() <= READBACK_TOL


def test_26_observations_need_their_layout_and_round_trip(tmp_path, capsys):
    """The motor-speed student (26 observations): no RAPTOR layout is assumed; with --observation it exports."""
    p = eyas.StudentPolicy(26, 4, generator=torch.Generator().manual_seed(5))
    source = tmp_path / "actor26.pt"
    torch.save({"state_dict": p.state_dict(), "num_obs": 26, "num_actions": 4, "hidden_dim": 16}, source)
    assert run_export([str(source), "--out", str(tmp_path / "a"), "--formats", "tar"]) == 2
    assert "--observation" in capsys.readouterr().err
    layout = "a-layout-given-on-the-command-line"  # any string: it is stored verbatim
    assert run_export([str(source), "--out", str(tmp_path / "b"), "--formats", "tar",
                        "--observation", layout]) == 0
    loaded = export.load_tar(tmp_path / "b" / "policy.tar")
    assert json.loads(loaded["meta"])["observation"] == layout
    assert loaded["example_input"].shape == (500, 2, 26)
    p.reset()
    with torch.no_grad():
        torch_out = p(torch.from_numpy(loaded["example_input"])).numpy()
    assert np.abs(torch_out - loaded["recomputed_output"]).max() <= STEP_TOL


@pytest.mark.parametrize("case", ["not_a_student", "wrong_widths", "unwritable_dir", "unknown_format"])
def test_bad_input_one_error_line_and_nothing_written(case, tmp_path, capsys):
    source = _student_pt(tmp_path / "actor.pt")
    out = tmp_path / "out"
    extra = []
    if case == "not_a_student":
        source = tmp_path / "notes.h5"
        source.write_text("not a checkpoint\n")
    elif case == "wrong_widths":
        p = eyas.StudentPolicy(10, 4)
        torch.save({"state_dict": p.state_dict(), "num_obs": 10, "num_actions": 4, "hidden_dim": 16}, source)
    elif case == "unwritable_dir":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "out"  # a path below a regular file: not creatable, even as root
    else:
        extra = ["--formats", "h5,zip"]
    assert run_export([str(source), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eyas export: error: "), err
    assert not out.exists() or not any(out.iterdir())


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch, capsys):
    source = _student_pt(tmp_path / "actor.pt")
    out = tmp_path / "out"

    def broken(ex, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "_write_onnx", broken)
    assert run_export([str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "policy.onnx" in err[0] and err[0].startswith("eyas export: error: ")
    assert not out.exists()  # policy.h5, .h, .tar were complete temporaries, deleted with the directory
    out.mkdir()
    (out / "policy.h5").write_bytes(b"an earlier export")
    assert run_export([str(source), "--out", str(out)]) == 2
    assert [p.name for p in out.iterdir()] == ["policy.h5"]  # no temporary left, the earlier file untouched
    assert (out / "policy.h5").read_bytes() == b"an earlier export"


def test_files_get_the_mode_of_any_new_file(exported):
    """The umask decides (0644 under the usual 022), as for any file a program creates; not mkstemp's 0600."""
    mask = os.umask(0o022)
    os.umask(mask)
    _, _, out = exported
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == \
        {name: oct(0o666 & ~mask) for name in export.FORMATS.values()}


def test_registered_in_cli():
    assert COMMANDS["export"][0] == "eyas.export"
