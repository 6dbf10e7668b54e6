"""The PNG plots of ``textdistill report`` and of ``textdistill evaluate --exit-sweep --plot`` (matplotlib, Agg
backend: no display needed).

Each function draws one figure, writes it to ``path`` and returns ``path``.
"""
from __future__ import annotations

from itertools import cycle
from pathlib import Path

from . import TextDistillError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, who: str = "report:") -> Path:
    plt = _pyplot()
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise TextDistillError(f"{who} {path}: cannot write ({e.strerror})") from None
    except ValueError as e:  # (a format matplotlib does not write)
        raise TextDistillError(f"{who} {path}: cannot write ({e})") from None
    finally:
        plt.close(fig)
    return path


def frontier(points: list[dict]) -> list[dict]:
    """The points no other point beats on both axes (higher x and higher y), by increasing x."""
    best = [p for p in points if not any(q["x"] >= p["x"] and q["y"] >= p["y"] and (q["x"], q["y"]) != (p["x"], p["y"])
                                         for q in points)]
    return sorted(best, key=lambda p: p["x"])


def pareto(path: Path, points: list[dict], xlabel: str, ylabel: str, title: str) -> Path:
    """Dev metric (mean ± sd over seeds) against speed-up over the teacher; ``points``: ``{label, x, y, sd,
    teacher}``. The Pareto front (no other model both faster and better) is drawn as a step line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for p in points:
        style = dict(marker="*", markersize=14, color="black") if p["teacher"] else dict(marker="o", markersize=7)
        ax.errorbar([p["x"]], [p["y"]], yerr=[p["sd"]] if p["sd"] else None, linestyle="none", capsize=3, **style)
        ax.annotate(p["label"] + (" (teacher)" if p["teacher"] and p["label"] != "teacher" else ""), (p["x"], p["y"]),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)
    front = frontier(points)
    if len(front) > 1:
        ax.step([p["x"] for p in front], [p["y"] for p in front], where="post", color="grey", alpha=0.6,
                linestyle="--", label="Pareto front")
        ax.legend(fontsize=8, loc="lower left")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def kept_bars(path: Path, bars: list[tuple[str, float, float]], title: str) -> Path:
    """``(label, % of teacher, sd)`` per student as bars, with a line at the teacher's 100 %."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.9 * len(bars)), 4))
    labels, kept, sd = zip(*bars)
    ax.bar(range(len(bars)), kept, yerr=[s or 0 for s in sd], capsize=3, color="tab:blue", alpha=0.8)
    for i, k in enumerate(kept):
        ax.annotate(f"{k:.1f}", (i, k), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.axhline(100, color="black", linewidth=1, linestyle="--", label="teacher")
    low = min(kept) - max(s or 0 for s in sd)
    ax.set_ylim(max(0.0, min(90.0, low - 5)), max(105.0, max(kept) + 5))
    ax.set_xticks(range(len(bars)), labels, rotation=30, ha="right")
    ax.set(ylabel="% of the teacher's dev score", title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _mean_by_epoch(histories: list[list[dict]], value) -> tuple[list[int], list[float]]:
    """Epochs and the mean over runs of ``value(epoch entry)`` (None where a run has none)."""
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for h in history:
            v = value(h)
            if v is not None:
                by_epoch.setdefault(h["epoch"], []).append(v)
    epochs = sorted(by_epoch)
    return epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]


def learning_curves(path: Path, histories: list[list[dict]], metric: str, scale: float, title: str) -> Path:
    """Each loss term's epoch mean (metrics.json ``history``, averaged over the runs) against the epoch, with the
    dev metric on a second axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    terms = list(dict.fromkeys(k for history in histories for h in history for k in h.get("loss", {})))
    values = []
    for term in terms:
        epochs, ys = _mean_by_epoch(histories, lambda h: h.get("loss", {}).get(term))
        ax.plot(epochs, ys, "o-", label=f"loss: {term}")
        values += ys
    if values and min(values) > 0:
        ax.set_yscale("log")  # the terms' scales differ by orders of magnitude (a KD term vs the task loss)
    elif values:
        ax.set_yscale("symlog", linthresh=1e-3)
    ax.set(xlabel="epoch", ylabel="training loss (epoch mean)", title=title)
    ax.grid(alpha=0.3)
    dev = ax.twinx()
    epochs, ys = _mean_by_epoch(histories, lambda h: (h.get("dev") or {}).get(metric))
    dev.plot(epochs, [scale * y for y in ys], "s--", color="black", label=f"dev {metric}")
    dev.set_ylabel(f"dev {metric}" + (" ×100" if scale == 100 else ""))
    all_epochs = sorted({h["epoch"] for history in histories for h in history})
    ax.set_xticks(all_epochs)
    handles = ax.get_legend_handles_labels()
    extra = dev.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.14), ncol=min(4, len(handles[0]) + len(extra[0])), frameon=False)
    return _save(fig, path)


def exit_curve(path: Path, sweep: list[dict], exits: list[dict], references: list[dict], ylabel: str, title: str,
               who: str = "--plot") -> Path:
    """Early exit of a model with exits: the metric against the mean number of layers run, one point per
    entropy threshold (``sweep``: ``{threshold, x, y, sd}``, labelled by threshold; thresholds landing on the same
    point share a label), each exit alone at its depth (``exits``: ``{x, y, sd}``) and other models at their
    depth (``references``: ``{label, x, y, sd}``, e.g. separately distilled students; those at the same depth are
    drawn a little apart). ``sd`` (spread over seeds) draws an error bar where it is set."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))

    def bars(points: list[dict]) -> list[float] | None:
        return [p.get("sd") or 0.0 for p in points] if any(p.get("sd") for p in points) else None

    ax.errorbar([p["x"] for p in sweep], [p["y"] for p in sweep], yerr=bars(sweep), fmt="o-", capsize=3,
                label="early exit (entropy threshold)")
    labels: dict[tuple, list[str]] = {}
    for p in sweep:
        labels.setdefault((p["x"], p["y"]), []).append(f"{p['threshold']:g}")
    for (x, y), names in labels.items():
        ax.annotate(names[0] if len(names) == 1 else f"{names[0]}-{names[-1]}", (x, y), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    if exits:
        ax.errorbar([p["x"] for p in exits], [p["y"] for p in exits], yerr=bars(exits), fmt="s", capsize=3,
                    label="one exit alone, at its depth")
    same_x = [sum(q["x"] == p["x"] for q in references[:i]) for i, p in enumerate(references)]
    for marker, p, k in zip(cycle("^vDP*Xph"), references, same_x):  # models at the same depth side by side
        ax.errorbar([p["x"] + 0.08 * k], [p["y"]], yerr=[p["sd"]] if p.get("sd") else None, fmt=marker,
                    markersize=8, capsize=3, label=p["label"])
    ax.set(xlabel="mean layers run per example", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path, who)
