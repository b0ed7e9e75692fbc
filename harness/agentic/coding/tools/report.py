#!/usr/bin/env python3
"""Daily report of the tollgate proxy's access log.

Reads the JSON-lines access log (one object per request: ts, route, key, status, ms) and
prints, per route, the request count, the share throttled (429), and latency percentiles.
Requests slower than SLOW_REQUEST_MS are listed separately so that on-call can look at them.
"""

import argparse
import json
import math
import sys
from collections import defaultdict

# A request slower than this (milliseconds) is listed in the "slow requests" section.
SLOW_REQUEST_MS = 850

# Percentiles shown per route.
PERCENTILES = (50, 90, 99)

# At most this many slow requests are listed; the rest are only counted.
MAX_SLOW_LISTED = 25

# Routes whose throttled share above this fraction is flagged for review.
THROTTLE_ALERT_SHARE = 0.07


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list (p in 0-100)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def read_log(lines):
    """Parses the log lines; malformed lines are counted and skipped."""
    records, bad = [], 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
            rec["ms"] = float(rec["ms"])
            rec["status"] = int(rec["status"])
            records.append(rec)
        except (ValueError, KeyError, TypeError):
            bad += 1
    return records, bad


def summarise_latencies(records):
    """Per route: count, throttled share and latency percentiles of forwarded requests."""
    by_route = defaultdict(list)
    throttled = defaultdict(int)
    for rec in records:
        route = rec.get("route", "?")
        if rec["status"] == 429:
            throttled[route] += 1
        by_route[route].append(rec)
    summary = {}
    for route, recs in sorted(by_route.items()):
        forwarded = sorted(r["ms"] for r in recs if r["status"] != 429)
        summary[route] = {
            "count": len(recs),
            "throttled_share": throttled[route] / len(recs),
            "percentiles": {p: percentile(forwarded, p) for p in PERCENTILES},
        }
    return summary


def slow_requests(records):
    """The requests slower than SLOW_REQUEST_MS, slowest first."""
    slow = [r for r in records if r["ms"] > SLOW_REQUEST_MS]
    slow.sort(key=lambda r: r["ms"], reverse=True)
    return slow


def flagged_routes(summary):
    """Routes whose throttled share exceeds THROTTLE_ALERT_SHARE."""
    return [route for route, s in summary.items() if s["throttled_share"] > THROTTLE_ALERT_SHARE]


def render(summary, slow, bad, out):
    out.write("route                      count  throttled   p50    p90    p99\n")
    for route, s in summary.items():
        p = s["percentiles"]
        cells = ["%6.0f" % p[q] if p[q] is not None else "     -" for q in PERCENTILES]
        out.write("%-25s %6d  %8.1f%%  %s\n" % (route, s["count"], 100 * s["throttled_share"], " ".join(cells)))
    flagged = flagged_routes(summary)
    if flagged:
        out.write("\nthrottling above %.0f%%: %s\n" % (100 * THROTTLE_ALERT_SHARE, ", ".join(flagged)))
    out.write("\nslow requests (> %d ms): %d\n" % (SLOW_REQUEST_MS, len(slow)))
    for r in slow[:MAX_SLOW_LISTED]:
        out.write("  %s %s %s %.0f ms\n" % (r.get("ts", "?"), r.get("route", "?"), r.get("key", "-"), r["ms"]))
    if bad:
        out.write("\n%d malformed log line(s) skipped\n" % bad)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", help="access log (JSON lines); - for stdin")
    args = parser.parse_args(argv)
    stream = sys.stdin if args.log == "-" else open(args.log, encoding="utf-8")
    with stream:
        records, bad = read_log(stream)
    summary = summarise_latencies(records)
    render(summary, slow_requests(records), bad, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
