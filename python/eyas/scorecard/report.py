"""The scorecard as a person reads it: a console table, and figures (the summary, tracking flights)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

REFERENCE = "raptor"  # the reference row's name when RAPTOR flies


def headline(entry: dict, kind: str) -> float:
    """The group's headline figure [m]: the tracking RMS after the ramp, or the final position error."""
    return entry["rms_error_mean"] if kind == "rms" else entry["position_error_mean"]


def table_lines(card: dict) -> list[str]:
    """One line per case, group and policy: terminated [95 % CI], final error [CI], tracking RMS, settling time, and
    the headline against the reference row on the same episodes."""
    policies = _policies(card)
    reference = REFERENCE if REFERENCE in policies else None
    lines = [f"{'case/group':<26} {'policy':<16} {'terminated':>17} {'final error [cm]':>22} {'RMS [cm]':>9} "
             f"{'settle [s]':>10} {'vs ' + (reference or '-'):>9}"]
    for case, groups in card["results"].items():
        kind = card["cases"][case]["headline"]
        for group, row in groups.items():
            base = headline(row[reference], kind) if reference else math.nan
            for name in policies:
                e = row[name]
                low, high = e["share_terminated_ci95"]
                err_low, err_high = e["position_error_ci95"]
                ratio = headline(e, kind) / base if base and base == base else math.nan
                lines.append(f"{case + '/' + group:<26} {name:<16} {100 * e['share_terminated']:5.1f} %"
                             f" [{100 * low:4.1f},{100 * high:4.1f}] {100 * e['position_error_mean']:6.2f}"
                             f" [{100 * err_low:5.2f},{100 * err_high:5.2f}] "
                             f"{_cm(e['rms_error_mean']) if kind == 'rms' else '':>9} "
                             f"{'' if kind == 'rms' else format(e['settling_time_mean'], '.2f'):>10} {ratio:8.2f}x")
    return lines


def _cm(value: float) -> str:
    return f"{100 * value:.2f}" if value == value else "nan"


def _policies(card: dict) -> list[str]:
    first = next(iter(next(iter(card["results"].values())).values()))
    return list(first)


def plot_summary(card: dict, path: Path) -> Path:
    """One figure: for every policy (rows) and case/group (columns), its headline figure over the reference's on
    the same episodes (colour, log scale; lower is better) and its terminated share (number)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = _policies(card)
    reference = REFERENCE if REFERENCE in policies else policies[0]
    columns = [(case, group) for case, groups in card["results"].items() for group in groups]
    ratio = np.full((len(policies), len(columns)), np.nan)
    terminated = np.zeros_like(ratio)
    for j, (case, group) in enumerate(columns):
        row, kind = card["results"][case][group], card["cases"][case]["headline"]
        for i, name in enumerate(policies):
            ratio[i, j] = headline(row[name], kind) / headline(row[reference], kind)
            terminated[i, j] = 100 * row[name]["share_terminated"]
    fig, ax = plt.subplots(figsize=(max(8, 0.32 * len(columns)), 1.2 + 0.6 * len(policies)))
    image = ax.imshow(np.log2(ratio), cmap="RdYlGn_r", vmin=-2, vmax=2, aspect="auto")
    for i in range(len(policies)):
        for j in range(len(columns)):
            ax.text(j, i, f"{terminated[i, j]:.0f}", ha="center", va="center", fontsize=6)
    ax.set_yticks(range(len(policies)), policies)
    ax.set_xticks(range(len(columns)), [f"{c}/{g}" for c, g in columns], rotation=90, fontsize=6)
    bar = fig.colorbar(image, ax=ax, fraction=0.02)
    bar.set_label(f"log2(headline / {reference}'s)")
    ax.set_title(f"scorecard: error against {reference} on the same episodes (colour), terminated % (numbers)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_tracking(card: dict, directory: Path) -> list[Path]:
    """Per tracking group with recorded flights: reference and flown paths in x-y, and x, y over time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for label, by_policy in card.get("flights", {}).items():
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
        for k, (name, flights) in enumerate(by_policy.items()):
            for i, flight in enumerate(flights):
                p, ref = np.asarray(flight["position"]), np.asarray(flight["reference"])
                t = np.arange(len(p)) * flight["dt"]
                style = dict(color=f"C{k}", alpha=0.8, lw=1, label=name if i == 0 else None)
                if k == 0:
                    axes[0].plot(ref[:, 0], ref[:, 1], "k--", lw=1, label="reference" if i == 0 else None)
                    for axis, ax in ((0, axes[1]), (1, axes[2])):
                        ax.plot(t, ref[:, axis], "k--", lw=1)
                axes[0].plot(p[:, 0], p[:, 1], **style)
                for axis, ax in ((0, axes[1]), (1, axes[2])):
                    ax.plot(t, p[:, axis], **style)
        axes[0].set(xlabel="x [m]", ylabel="y [m]", title=label, aspect="equal")
        axes[1].set(xlabel="t [s]", ylabel="x [m]")
        axes[2].set(xlabel="t [s]", ylabel="y [m]")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        path = directory / f"{label.replace('/', '_')}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def case_lines(card: dict) -> list[str]:
    """One line per case: each policy's mean headline error over the case's groups (cm) and mean terminated share,
    and the groups where a student's headline is above the reference's."""
    policies = _policies(card)
    reference = REFERENCE if REFERENCE in policies else None
    lines = [f"  {'case':<12} " + " ".join(f"{name + ' [cm, %]':>22}" for name in policies)
             + ("  groups above RAPTOR's error" if reference else "")]
    for case, groups in card["results"].items():
        kind = card["cases"][case]["headline"]
        cells = []
        for name in policies:
            errors = [headline(row[name], kind) for row in groups.values()]
            errors = [e for e in errors if e == e]
            share = sum(row[name]["share_terminated"] for row in groups.values()) / len(groups)
            cells.append(f"{100 * sum(errors) / max(len(errors), 1):9.2f} {100 * share:6.1f} %")
        above = [g for g, row in groups.items() if reference and any(
            headline(row[n], kind) > headline(row[reference], kind) for n in policies if n != reference)]
        lines.append(f"  {case:<12} " + " ".join(f"{c:>22}" for c in cells) + (f"  {', '.join(above)}" if above else ""))
    return lines
