"""The scaling curves as one PNG (matplotlib, headless).

    plot_curves({"keys": [[1000, 150000], ...], ...}, Path("bench/results/scaling.png"))
"""

from __future__ import annotations

from pathlib import Path

PANELS = {"keys": ("distinct keys", True), "overlap": ("hopping window size / slide", False),
          "workers": ("Dask workers", False), "record_bytes": ("record size (bytes)", True)}


def plot_curves(curves: dict[str, list[list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4))
    for ax, (name, (label, log_x)) in zip(axes, PANELS.items()):
        points = curves.get(name, [])
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, [y / 1000 for y in ys], marker="o", label="records / s")
        results = curves.get(name + "_results", [])
        if results:  # the overlap panel also shows window results per second
            ax.plot(*zip(*[(x, y / 1000) for x, y in results]), marker="s", label="results / s")
            ax.legend(fontsize=8)
        ax.set_xlabel(label)
        if log_x:
            ax.set_xscale("log")
        elif points:
            ax.set_xticks(xs)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("thousand records / s")
    fig.suptitle("Windowed pipeline, exactly-once, 2-core machine")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
