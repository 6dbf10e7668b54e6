#!/usr/bin/env python
"""A teacher fine-tuned again (its model lost with a machine, its figures kept in results/): does it match the
kept one? Compares the dev scores and each epoch's loss and dev scores of runs/teachers/NAME/metrics.json with
results/teachers/NAME/metrics.json and prints one line; the students kept in results/ were taught by the kept
teacher, so a difference is said loudly (exit 0 either way: the script informs, the runs go on). No such teacher
run, or a metrics file that is not JSON: one line on stderr, exit 2 (the scripts that call it go on).

    .venv/bin/python scripts/compare_teacher.py NAME [REPO]
"""
import json
import sys
from pathlib import Path


class Refused(Exception):
    pass


def figures(path: Path) -> dict:
    try:
        m = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Refused(f"{path}: not a metrics file ({e})") from None
    return {"dev": m.get("dev"), "epochs": [(h.get("step"), h.get("dev")) for h in m.get("history", [])],
            "loss": [v for h in m.get("history", []) for v in sorted((h.get("loss") or {}).items())]}


def main(name: str, repo: str = ".", rel: float = 1e-4) -> str:
    """Dev scores (final and per epoch) must be equal; epoch losses equal within ``rel`` (the last printed digit
    moves between CPUs and thread counts)."""
    new, kept = (Path(repo) / root / "teachers" / name / "metrics.json" for root in ("runs", "results"))
    if not new.is_file():
        raise Refused(f"{new}: no such teacher run")
    if not kept.is_file():
        return f"teacher {name}: no kept figures to compare with (a first run)"
    a, b = figures(new), figures(kept)
    pairs = list(zip(a["loss"], b["loss"]))
    close = len(a["loss"]) == len(b["loss"]) and all(
        ka == kb and abs(va - vb) <= rel * max(abs(va), abs(vb), 1e-12) for (ka, va), (kb, vb) in pairs)
    if a["dev"] == b["dev"] and a["epochs"] == b["epochs"] and close:
        worst = max((abs(va - vb) for (_, va), (_, vb) in pairs), default=0.0)
        return (f"teacher {name} fine-tuned again: the kept dev scores exactly, each epoch's loss within {worst:.1g} "
                f"of the kept one")
    return (f"WARNING teacher {name} fine-tuned again differs from the kept one (dev {a['dev']} vs kept "
            f"{b['dev']}{'' if close else '; its loss history differs'}): the students kept in results/ were taught "
            f"by the kept teacher")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print("usage: compare_teacher.py NAME [REPO]", file=sys.stderr)
        sys.exit(2)
    try:
        print(main(*sys.argv[1:3]))
    except Refused as e:
        print(f"compare_teacher: {e}", file=sys.stderr)
        sys.exit(2)
