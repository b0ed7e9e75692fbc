#!/usr/bin/env python3
"""How the host's own speed (o3-host-speed, the kernel each cell reads beside its trials) moves
with a server's prefill and decode rates on this machine: the measurement behind README "The
host's own speed".

    python3 harness/host-drift.py [--minutes 12] [--busy] [--models smollm2:135m,gemma3:270m]

Rounds of: one kernel reading, one generate per model (a new ~300-token prompt, 48 tokens out),
another reading; the kernel's figure of a round is the mean of its two readings. With --busy a
busy loop (`while :; do :; done`) runs through the middle 30 % of the time (from 40 % to 70 %).
The server is OLLAMA_HOST (default 127.0.0.1:11435, the reference server: bash
harness/refserver.sh start). Prints a Markdown table; --out FILE keeps every round as JSON lines.
Every request has a timeout; the busy loop is killed on any exit.
"""

import argparse
import json
import math
import os
import random
import statistics as st
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
         "rho sigma tau upsilon phi chi psi omega").split()


def host_speed_bin():
    subprocess.run(["cargo", "build", "--release", "-q", "--bin", "o3-host-speed"], cwd=ROOT,
                   check=True, timeout=1800)
    meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                                     cwd=ROOT, check=True, capture_output=True,
                                     timeout=120).stdout)
    return os.path.join(meta["target_directory"], "release", "o3-host-speed")


def reading(binary):
    out = subprocess.run([binary], check=True, capture_output=True, text=True, timeout=60).stdout
    return json.loads(out)["gflops"]


def generate(base, model, rng):
    prompt = " ".join(rng.choice(WORDS) + str(rng.randint(0, 99)) for _ in range(300))
    body = json.dumps({"model": model, "prompt": prompt, "stream": False,
                       "options": {"num_predict": 48, "num_ctx": 4096, "temperature": 0}})
    req = urllib.request.Request(base + "/api/generate", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        d = json.load(r)
    return (d["prompt_eval_count"] / d["prompt_eval_duration"] * 1e9,
            d["eval_count"] / d["eval_duration"] * 1e9)


def corr(x, y):
    if len(x) < 3 or st.pstdev(x) == 0 or st.pstdev(y) == 0:
        return float("nan")
    mx, my = st.mean(x), st.mean(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / len(x) / st.pstdev(x) / st.pstdev(y)


def table(rows, models, minutes):
    """The Markdown table of the rounds `rows`."""
    alone = [r for r in rows if r["phase"] == "alone"]
    slow = sorted(alone, key=lambda r: r["kernel"])[: len(alone) // 3]
    fast = sorted(alone, key=lambda r: r["kernel"])[-(len(alone) // 3):]
    figures = [(m, i, f"{m} {'prefill' if i == 0 else 'decode'}") for m in models for i in (0, 1)]
    print(f"{len(rows)} rounds over {minutes:g} minutes ({len(alone)} alone)\n")
    print("| | kernel | " + " | ".join(f[2] for f in figures) + " |")
    print("|---|---:|" + "---:|" * len(figures))
    k = lambda rs: [r["kernel"] for r in rs]
    v = lambda rs, m, i: [r[m][i] for r in rs]
    print("| correlation with the kernel, alone | | "
          + " | ".join(f"{corr(k(alone), v(alone, m, i)):.2f}" for m, i, _ in figures) + " |")
    print("| correlation, all rounds | | "
          + " | ".join(f"{corr(k(rows), v(rows, m, i)):.2f}" for m, i, _ in figures) + " |")
    def contrast(label, base, other, change):
        """Two rows: each figure's ratio of `base` rounds over `other` rounds, shown by `change`
        (the kernel's first), and that ratio as a multiple of the kernel's, in logs."""
        kl = math.log(st.mean(k(base)) / st.mean(k(other)))
        ratios = [st.mean(v(base, m, i)) / st.mean(v(other, m, i)) for m, i, _ in figures]
        print(f"| {label} | {change(math.exp(kl))} | "
              + " | ".join(change(r) for r in ratios) + " |")
        print("| … as a multiple of the kernel's change, in logs | 1 | "
              + " | ".join(f"{math.log(r) / kl:.2f}" for r in ratios) + " |")

    if slow and fast:
        contrast("fastest third of the alone rounds against the slowest", fast, slow,
                 lambda r: f"{r - 1:+.0%}")
    hog = [r for r in rows if r["phase"] == "busy"]
    if hog and alone:
        contrast("busy loop beside it: how many times slower", alone, hog, lambda r: f"{r:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--busy", action="store_true")
    ap.add_argument("--models", default="smollm2:135m,gemma3:270m")
    ap.add_argument("--out")
    a = ap.parse_args()
    host = os.environ.get("OLLAMA_HOST", "127.0.0.1:11435")
    base = host if host.startswith("http") else "http://" + host
    models = [m for m in a.models.split(",") if m]
    binary = host_speed_bin()
    rng = random.Random(time.time_ns())
    rows, busy = [], None
    out = open(a.out, "w") if a.out else None
    t0, dur = time.time(), a.minutes * 60
    try:
        while time.time() - t0 < dur:
            el = time.time() - t0
            phase = "busy" if a.busy and 0.4 * dur < el < 0.7 * dur else "alone"
            if phase == "busy" and busy is None:
                busy = subprocess.Popen(["sh", "-c", "while :; do :; done"])
            if phase == "alone" and busy is not None:
                busy.kill()
                busy.wait()
                busy = None
            before = reading(binary)
            row = {"t": round(el, 1), "phase": phase}
            for m in models:
                row[m] = generate(base, m, rng)
            row["kernel"] = (before + reading(binary)) / 2
            rows.append(row)
            if out:
                out.write(json.dumps(row) + "\n")
                out.flush()
            print(f"[host-drift] {el:5.0f} s {phase}: kernel {row['kernel']:.1f} GFLOP/s, "
                  + ", ".join(f"{m} {row[m][0]:.0f}/{row[m][1]:.1f} tok/s" for m in models),
                  file=sys.stderr)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    table(rows, models, a.minutes)

if __name__ == "__main__":
    main()
