"""Throughput vs batch size, as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_sweep(sweep: list[dict[str, Any]], ceiling_rate: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [s["batch_size"] for s in sweep]
    rates = [s["events_per_s"] for s in sweep]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(sizes, rates, marker="o", label="streamproc run --drain (1 worker)")
    ax.axhline(ceiling_rate, color="grey", linestyle="--", label="ceiling: XREADGROUP + XACK only")
    ax.axhline(ceiling_rate / 2, color="grey", linestyle=":", label="50 % of the ceiling")
    ax.set_xscale("log")
    ax.set_xlabel("batch size (entries per XREADGROUP)")
    ax.set_ylabel("events per second")
    ax.set_title("streamproc throughput vs batch size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
