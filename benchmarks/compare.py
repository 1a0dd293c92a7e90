"""The table of ``benchmarks/compare.sh``: two trees' benchmark JSON, round by round, side by side.

    python -m benchmarks.compare --current A1.json A2.json --rev B1.json B2.json [--rev-label REV]

Each file is the ``--json`` output of one ``python -m benchmarks.run`` (each
side ran its own benchmark code). Every numeric figure is flattened to a
dotted key (``a.dockyard.wall_s``); a list of numbers counts by its smallest
value (the best of the repeats, ``.min``), any other list by its length
(``.count``); in a dict of counts (cache outcomes, builds per engine) a
missing key counts 0; the bench run's id is taken out of worker names;
booleans and strings are left out, and so are the sections
``targets`` (the same values again, with verdicts) and ``cleanup`` (what was
removed, not a measurement). For each key both sides have: the median of each
side, the ratio current / REV, each side's spread ((max - min) / median, in %)
and whether the two sides' ranges overlap. Keys only one side has are listed
after the table.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SKIPPED_SECTIONS = ("targets", "cleanup")
RUN_ID = re.compile(r"^(bench-)[0-9a-f]{8}(?=-|$)")  # the run id in bench worker names


def _name(key: str) -> str:
    """A JSON key with the run's id taken out (bench worker ``bench-1a2b3c4d-1`` is ``bench-<run>-1``)."""
    return RUN_ID.sub(r"\1<run>", key)


def flatten(results: Any, prefix: str = "", counters: set[str] | None = None) -> dict[str, float]:
    """The numeric figures of one run's JSON, by dotted key.

    ``counters`` collects the prefixes of dicts of counts (every value an
    int, such as cache outcomes or builds per engine): a key missing there
    in one run is a count of 0.
    """
    flat: dict[str, float] = {}
    if isinstance(results, dict):
        values = list(results.values())
        if counters is not None and prefix and values and all(
                isinstance(v, int) and not isinstance(v, bool) for v in values):
            counters.add(prefix)
        for name, value in results.items():
            if not prefix and name in SKIPPED_SECTIONS:
                continue
            flat.update(flatten(value, f"{prefix}{_name(str(name))}.", counters))
    elif isinstance(results, bool) or results is None or isinstance(results, str):
        pass
    elif isinstance(results, (int, float)):
        flat[prefix[:-1]] = float(results)
    elif isinstance(results, list):
        if results and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in results):
            flat[f"{prefix}min"] = float(min(results))
        else:
            flat[f"{prefix}count"] = float(len(results))
    return flat


def load(paths: Iterable[Path], counters: set[str] | None = None) -> list[dict[str, float]]:
    return [flatten(json.loads(Path(path).read_text()), counters=counters) for path in paths]


def fill_counts(runs: Sequence[dict[str, float]], keys: Iterable[str], counters: set[str]) -> None:
    """Give every run a 0 for each key of a dict of counts it did not report (a count that did not occur)."""
    for key in keys:
        if key.rpartition(".")[0] + "." in counters:
            for run in runs:
                run.setdefault(key, 0.0)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.3f}"
    return f"{value:.4f}"


def _spread(values: Sequence[float], median: float) -> str:
    if len(values) < 2:
        return "-"
    width = max(values) - min(values)
    if median == 0:
        return "0%" if width == 0 else "-"
    return f"{100 * width / abs(median):.0f}%"


def table(current: Sequence[dict[str, float]], rev: Sequence[dict[str, float]], *,
          current_label: str = "current", rev_label: str = "REV") -> str:
    """The comparison table (and the keys only one side has) as text."""
    current_keys = set().union(*current) if current else set()
    rev_keys = set().union(*rev) if rev else set()
    shared = sorted(current_keys & rev_keys)
    width = max([len(key) for key in shared] + [24]) + 2
    header = (f"{'figure':<{width}}{current_label[:14]:>14}{rev_label[:14]:>14}{'ratio':>9}"
              f"{'spread cur':>12}{'spread rev':>12}{'overlap':>9}")
    lines = [
        f"benchmark figures: {current_label} vs {rev_label}, median of {len(current)} / {len(rev)} runs "
        "(run alternately), ratio = current / REV",
        f"spread = (max - min) / median of one side; overlap = the two sides' [min, max] ranges meet",
        header,
        "-" * len(header),
    ]
    for key in shared:
        a = [run[key] for run in current if key in run]
        b = [run[key] for run in rev if key in run]
        ma, mb = statistics.median(a), statistics.median(b)
        if mb != 0:
            ratio = f"{ma / mb:.3f}"
        else:
            ratio = "1.000" if ma == 0 else "-"
        overlap = "yes" if max(min(a), min(b)) <= min(max(a), max(b)) else "no"
        lines.append(f"{key:<{width}}{_number(ma):>14}{_number(mb):>14}{ratio:>9}"
                     f"{_spread(a, ma):>12}{_spread(b, mb):>12}{overlap:>9}")
    only_current = sorted(current_keys - rev_keys)
    only_rev = sorted(rev_keys - current_keys)
    lines.append("")
    lines.append(f"only in {current_label}: " + (", ".join(only_current) or "none"))
    lines.append(f"only in {rev_label}: " + (", ".join(only_rev) or "none"))
    lines.append(f"left out: the sections {', '.join(SKIPPED_SECTIONS)}; booleans and strings")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--current", nargs="+", type=Path, required=True, help="JSON of the current tree's runs")
    parser.add_argument("--rev", nargs="+", type=Path, required=True, help="JSON of the revision's runs")
    parser.add_argument("--current-label", default="current", help="column name of the current tree")
    parser.add_argument("--rev-label", default="REV", help="column name of the revision")
    args = parser.parse_args(argv)
    counters: set[str] = set()
    current, rev = load(args.current, counters), load(args.rev, counters)
    fill_counts([*current, *rev], set().union(*current, *rev), counters)
    print(table(current, rev, current_label=args.current_label, rev_label=args.rev_label))
    return 0


if __name__ == "__main__":
    sys.exit(main())
