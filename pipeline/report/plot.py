"""The accuracy-against-latency plot: one panel per target, the Pareto front drawn."""

from __future__ import annotations

from pathlib import Path

from pipeline.report.rows import ArtifactRow

PLOT_FILE = "accuracy-latency.png"


def plot_accuracy_latency(rows: list[ArtifactRow], path: Path) -> Path:
    """Top-1 against p50 latency, one panel per target, the Pareto front drawn as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(row.target for row in rows))
    fig, axes = plt.subplots(1, max(1, len(targets)), figsize=(6.5 * max(1, len(targets)), 4.5))
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, target in zip(axes, targets, strict=False):
        points = [r for r in rows if r.target == target and r.p50_ms and r.top1 is not None]
        names = sorted({r.artifact for r in rows})
        tab10 = plt.get_cmap("tab10")
        palette = [tab10(i) for i in range(10) if i != 3]  # red marks the front
        for r in points:  # one colour per artifact (labels would collide); a red ring on the front
            ax.scatter(
                r.p50_ms, 100 * r.top1, s=70, zorder=3, label=r.artifact,
                color=palette[names.index(r.artifact) % len(palette)],
                edgecolors="tab:red" if r.pareto else "none", linewidths=2,
            )  # fmt: skip
        if points:
            low, high = min(100 * r.top1 for r in points), max(100 * r.top1 for r in points)
            ax.set_ylim(low - 2, min(100.5, high + 2) if high < 100 else 101)
        front = sorted((r.p50_ms, 100 * r.top1) for r in points if r.pareto)
        if front:
            xs, ys = zip(*front, strict=True)
            ax.step(xs, ys, where="post", color="tab:red", lw=1.2, label="Pareto front")
        ax.set(title=target, xlabel="p50 latency at batch 1 (ms, log)", ylabel="test top-1 (%)")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
