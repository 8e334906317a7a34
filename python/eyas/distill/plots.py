"""Figures of a distillation run (`eyas distill` writes them at the end; `python -m eyas.distill.plots LOG_DIR`
redraws them): training.png (loss, returns, terminations per epoch) and flights.png (a few flights of the best
actor: position over time, 3-D path, motor commands)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from eyas.distill.dataset import DistillationError
from eyas.io import read_torch_file


def _figure_module():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from eyas.io import atomic_with

    return atomic_with(path, lambda tmp: fig.savefig(tmp, dpi=110), suffix=path.suffix)


def plot_training(log_dir: Path) -> Path:
    """Loss per gradient step; collection and held-out returns; share terminated; registry-model returns."""
    plt = _figure_module()
    log_dir = Path(log_dir)
    history = json.loads((log_dir / "history.json").read_text())
    rows, teacher = history["history"], history["teacher_eval"]["summary"]
    state = read_torch_file(log_dir / "state.pt", DistillationError, "run state")
    loss = np.asarray(state["loss_steps"], dtype=float)
    epochs = np.array([r["epoch"] for r in rows])
    actor_student = np.array([r["actor"] == "student" for r in rows], dtype=bool)
    coll = np.array([r["evaluation"]["return_mean"] for r in rows])
    coll_term = np.array([r["evaluation"]["share_terminated"] for r in rows])
    ev_rows = [r for r in rows if "eval" in r]
    ev_epochs = np.array([r["epoch"] for r in ev_rows])
    apg = history.get("apg") or []

    fig, ax = plt.subplots(3 if apg else 2, 2, figsize=(13, 12.5 if apg else 8.5))
    _plot_loss(ax[0, 0], loss, rows)

    a = ax[0, 1]
    a.axhline(teacher["return_mean"], color="k", ls="--", lw=1, label=f"teachers, own dynamics ({teacher['return_mean']:.0f})")
    a.axhline(0.9 * teacher["return_mean"], color="gray", ls=":", lw=1, label="90 % of teachers")
    a.plot(epochs[~actor_student], coll[~actor_student], "s", ms=4, color="tab:green", label="collection: teachers fly")
    a.plot(epochs[actor_student], coll[actor_student], "o-", ms=3, color="tab:blue",
           label="collection: student on teachers' dynamics")
    if ev_rows and "randomized" in ev_rows[0]["eval"]:
        a.plot(ev_epochs, [r["eval"]["randomized"]["return_mean"] for r in ev_rows], "o-", ms=3, color="tab:red",
               label="student, held-out randomised dynamics")
    a.set_xlabel("epoch")
    a.set_ylabel("mean return (500 steps)")
    a.set_title("returns")
    a.legend(fontsize=8)

    a = ax[1, 0]
    a.plot(epochs, 100 * coll_term, "o-", ms=3, label="collection")
    if ev_rows and "randomized" in ev_rows[0]["eval"]:
        a.plot(ev_epochs, [100 * r["eval"]["randomized"]["share_terminated"] for r in ev_rows], "o-", ms=3,
               color="tab:red", label="held-out randomised")
    a.axhline(100 * teacher["share_terminated"], color="k", ls="--", lw=1, label="teachers")
    a.set_xlabel("epoch")
    a.set_ylabel("terminated episodes [%]")
    a.set_title("share terminated")
    a.legend(fontsize=8)

    _plot_position_errors(ax[1, 1], ev_epochs, ev_rows, history["teacher_eval"].get("raptor_eval"))
    if apg:
        _plot_apg(ax[2], apg, teacher, history["teacher_eval"].get("raptor_eval"))
    fig.suptitle(f"eyas distill: {log_dir.name}")
    fig.tight_layout()
    out = _save(fig, log_dir / "training.png")
    plt.close(fig)
    return out


def _plot_loss(a, loss: np.ndarray, rows: list[dict]) -> None:
    """The imitation loss per gradient step and per epoch."""
    if loss.size:
        a.plot(np.arange(1, loss.size + 1), loss, lw=0.6, alpha=0.5, label="per gradient step")
        a.plot([r["gradient_steps"] for r in rows], [r["loss"] for r in rows], "o-", ms=3, label="epoch mean")
        a.set_yscale("log")
    a.set_xlabel("gradient step")
    a.set_ylabel("MSE loss (student vs teacher actions)")
    a.set_title("imitation loss")
    a.legend()


def _plot_position_errors(a, epochs, rows: list[dict], raptor: dict | None, xlabel: str = "epoch") -> None:
    """Final position error per evaluation group (log scale), RAPTOR's on the same episodes dashed in the same
    colour: what a point-control policy exists to minimise."""
    groups = list(rows[0]["eval"]) if rows else []
    for i, name in enumerate(groups):
        errors = [100 * r["eval"][name].get("position_error_mean", np.nan) for r in rows]
        line, = a.plot(epochs, errors, "o-", ms=2, color=f"C{i % 10}", label=name)
        if raptor and name in raptor:
            a.axhline(100 * raptor[name]["position_error_mean"], color=line.get_color(), ls="--", lw=0.8)
    a.set_xlabel(xlabel)
    a.set_ylabel("final position error [cm] (episodes not terminated)")
    a.set_title("position error per group" + (" (dashed: RAPTOR, same episodes)" if raptor else ""))
    if groups:
        a.set_yscale("log")
        a.legend(fontsize=8, ncol=2)


def _plot_apg(ax, rows: list[dict], teacher: dict, raptor: dict | None) -> None:
    """APG phase: its loss parts per evaluation window, and the evaluations (position error per group beside
    RAPTOR's, share terminated on randomised dynamics): what the best-actor rule compares."""
    it = np.array([r["iteration"] for r in rows])
    trained = [r for r in rows if r["cost"] is not None]
    a = ax[0]
    if trained:
        t_it = np.array([r["iteration"] for r in trained])
        a.plot(t_it, [r["cost"] for r in trained], "o-", ms=3, label="cost (position, action change, tilt, barrier)")
        a.plot(t_it, [r["imitation"] for r in trained], "o-", ms=3, label="imitation MSE")
        a.set_yscale("log")
        b = a.twinx()
        b.plot(t_it, [100 * r["terminated"] for r in trained], "s--", ms=3, color="tab:red", label="ended within horizon")
        b.set_ylabel("episodes ended within the horizon [%]")
        b.legend(fontsize=8, loc="upper right")
    a.set_xlabel("APG iteration")
    a.set_ylabel("loss parts (mean per step)")
    a.set_title("APG fine-tuning: training flights")
    a.legend(fontsize=8, loc="upper left")
    a = ax[1]
    a.plot(it, [r["score"] for r in rows], "o-", ms=3, label="score: mean ln(error / RAPTOR's) + 5 x terminated excess")
    accepted = [r for r in rows if r["selection"].startswith("new best")]
    a.plot([r["iteration"] for r in accepted], [r["score"] for r in accepted], "k*", ms=8, label="accepted")
    a.axhline(0, color="gray", lw=0.8)
    a.set_xlabel("APG iteration (0: the distilled actor)")
    a.set_ylabel("score against RAPTOR (lower is better)")
    a.set_title("APG fine-tuning: candidates on the scorecard's selection cases")
    a.legend(fontsize=7, loc="upper left")
    b = a.twinx()
    b.plot(it, [len(r["worse_than_raptor"]) for r in rows], "s:", ms=3, color="tab:red",
           label="groups worse than RAPTOR (paired tests)")
    b.set_ylabel("groups worse than RAPTOR")
    b.legend(fontsize=7, loc="upper right")


def plot_flights(log_dir: Path) -> Path:
    """Position over time, 3-D path and motor commands of the recorded flights (flights.json)."""
    plt = _figure_module()
    log_dir = Path(log_dir)
    flights = json.loads((log_dir / "flights.json").read_text())
    n = len(flights)
    fig = plt.figure(figsize=(15, 3.2 * n))
    for i, f in enumerate(flights):
        pos = np.asarray(f["position"])
        act = np.asarray(f["action"])
        t = np.arange(len(pos)) * f.get("dt", 0.01)
        title = f"{f['label']}: return {f['return']:.0f}" + (" (terminated)" if f["terminated"] else "")
        a = fig.add_subplot(n, 3, 3 * i + 1)
        for k, name in enumerate("xyz"):
            a.plot(t, pos[:, k], label=name)
        a.axhline(0, color="k", lw=0.5)
        a.set_xlabel("time [s]")
        a.set_ylabel("position [m]")
        a.set_title(title, fontsize=9)
        a.legend(fontsize=7)
        a = fig.add_subplot(n, 3, 3 * i + 2, projection="3d")
        a.plot(pos[:, 0], pos[:, 1], pos[:, 2])
        a.scatter([pos[0, 0]], [pos[0, 1]], [pos[0, 2]], color="g", s=15, label="start")
        a.scatter([0], [0], [0], color="r", marker="x", s=30, label="target")
        a.set_xlabel("x")
        a.set_ylabel("y")
        a.set_zlabel("z")
        a.legend(fontsize=7)
        a = fig.add_subplot(n, 3, 3 * i + 3)
        for k in range(act.shape[1]):
            a.plot(t, act[:, k], lw=0.8, label=f"motor {k}")
        a.set_ylim(-1.05, 1.05)
        a.set_xlabel("time [s]")
        a.set_ylabel("action [-1, 1]")
        a.legend(fontsize=7, ncol=4)
    fig.suptitle("best actor: flights")
    fig.tight_layout()
    out = _save(fig, log_dir / "flights.png")
    plt.close(fig)
    return out


def plot_run(log_dir: Path) -> list[Path]:
    out = [plot_training(log_dir)]
    if (Path(log_dir) / "flights.json").is_file():
        out.append(plot_flights(log_dir))
    return out


if __name__ == "__main__":
    for p in plot_run(Path(sys.argv[1])):
        print(p)
