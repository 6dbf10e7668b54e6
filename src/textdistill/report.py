"""Tables of results (markdown), and inference speed of a teacher and its students."""
from __future__ import annotations

import statistics


def markdown_table(header: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def mean_cell(values: list[float]) -> str:
    """``mean ± sd (n)`` of a table cell (``mean (1)`` for one value, empty for none)."""
    if not values:
        return ""
    mean, sd = mean_std(values)
    return f"{mean:.2f} ± {sd:.2f} ({len(values)})" if len(values) > 1 else f"{mean:.2f} (1)"


def speed_table(models: dict, batch: dict, rounds: int = 3, repeats: int = 10) -> dict[str, float]:
    """Median forward latency (seconds) of each model on the same tokenized batch.

    The models are timed in interleaved rounds (A, B, C, A, B, C, ...) so that machine noise hits
    all of them alike; the median over rounds is returned.
    """
    from .evaluate import latency

    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(latency(model, batch, repeats=repeats))
    return {name: statistics.median(v) for name, v in times.items()}
