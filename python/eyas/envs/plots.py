"""Flight plots (matplotlib): position over time, 3-D path and motor commands of recorded episodes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eyas.io import atomic_with


def plot_flight(trajectory: dict, path: str | Path, title: str = "") -> Path:
    """Save a figure of one recorded episode (`EvaluationResult.trajectories[i]`) to `path` (png/pdf/svg).

    `trajectory` holds arrays "position" (T, 3), "action" (T, 4) and "dt" (the step in seconds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    position = np.asarray(trajectory["position"])
    action = np.asarray(trajectory["action"])
    t = np.arange(len(position)) * float(trajectory.get("dt", 0.01))

    fig = plt.figure(figsize=(15, 4.2))
    ax = fig.add_subplot(1, 3, 1)
    for i, axis in enumerate("xyz"):
        ax.plot(t, position[:, i], label=axis)
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="time [s]", ylabel="position [m]", title="position (target: origin)")
    ax.legend()

    ax = fig.add_subplot(1, 3, 2, projection="3d")
    ax.plot(*position.T, lw=1.2)
    ax.scatter(*position[0], color="tab:green", label="start")
    ax.scatter(0, 0, 0, color="tab:red", marker="x", label="target")
    ax.set(xlabel="x [m]", ylabel="y [m]", zlabel="z [m]", title="path")
    ax.legend()

    ax = fig.add_subplot(1, 3, 3)
    for i, name in enumerate(("front-right", "back-right", "back-left", "front-left")):
        ax.plot(t, action[:, i], label=name, lw=0.9)
    ax.set(xlabel="time [s]", ylabel="action [-1, 1]", title="motor commands", ylim=(-1.05, 1.05))
    ax.legend(fontsize="small")

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    atomic_with(path, lambda tmp: fig.savefig(tmp, dpi=110), suffix=path.suffix)
    plt.close(fig)
    return path
