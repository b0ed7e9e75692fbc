#!/usr/bin/env python3
"""The baseline check's verdict (harness/test.sh): two runs of the same cells with nothing changed
between them must give no verdict.

    python3 harness/baseline-check.py <regression.json> <test name>...

Reads the run's comparative_analysis/regression.json and prints one line per figure of each
named cell. Exits 1 when a named cell was not compared, or when a figure of the server came out
REGRESSED or improved (nothing changed, so either is a false verdict); "can't tell" and "moved
with the host" are said, not failed: the first is what noise beyond the threshold honestly gives,
the second a change of the machine, not of the server.
"""

import json
import sys

LABELS = {
    "regressed": "REGRESSED",
    "improved": "improved",
    "with_host": "moved with the host",
    "inconclusive": "can't tell",
    "no_change": "no change",
}


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path, names = argv[1], argv[2:]
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        print(f"[baseline-check] FAILED: {path}: {e}")
        return 1
    cells = {c["test_name"]: c for c in report.get("cells", [])}
    floor = report.get("noise_floor")
    if floor:
        parts = [f"{f['figure']} ±{f['floor'] * 100:.1f}% (n={f['n']})" for f in floor["figures"]]
        print(f"[baseline-check] noise floor from {floor['run_id']} against "
              f"{floor['baseline_run_id']}: " + ", ".join(parts))
        for left in floor.get("with_host", []):
            print(f"[baseline-check] left out of the floor, the host accounted for it: "
                  f"{left['test_name']} {left['figure']}")
    failed = False
    counts = {}
    for name in names:
        cell = cells.get(name)
        if cell is None:
            print(f"[baseline-check] FAILED: {name} was not compared with the baseline")
            failed = True
            continue
        for ch in cell["changes"]:
            outcome = ch["outcome"]
            counts[outcome] = counts.get(outcome, 0) + 1
            false_verdict = outcome in ("regressed", "improved")
            failed |= false_verdict
            print(f"[baseline-check] {'FAILED: ' if false_verdict else ''}{name} {ch['figure']}: "
                  f"{LABELS.get(outcome, outcome)}, {ch['change'] * 100:+.1f}% "
                  f"(threshold ±{ch['threshold'] * 100:.1f}%)")
    summary = ", ".join(f"{n} {LABELS.get(o, o)}" for o, n in sorted(counts.items()))
    print(f"[baseline-check] {'FAILED' if failed else 'passed'}: {summary or 'nothing compared'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
