#!/usr/bin/env python3
"""Migrates tollgate 1.x YAML configuration to the 2.x TOML layout.

1.x kept upstreams as a list of "host:port" strings with an optional "*weight" suffix and the
rate limits in a separate file; 2.x has one TOML file with [[upstream]] tables and a
[limits] table. The script refuses to overwrite an existing file unless --force is given.
"""

import argparse
import os
import sys

# The first 2.x schema version this script writes.
TARGET_SCHEMA = 4

# Weight of an upstream written without a "*weight" suffix.
DEFAULT_WEIGHT = 10

# 1.x keys that have no 2.x equivalent and are dropped with a warning.
DROPPED_KEYS = ("legacy_health_path", "sticky_sessions", "gzip_level")


class MigrationError(Exception):
    """A 1.x configuration that cannot be migrated as it is."""


def parse_upstream(entry, index):
    """'10.0.4.7:8080*3' -> ('upstream-1', '10.0.4.7:8080', 3)."""
    address, _, weight = entry.partition("*")
    if ":" not in address:
        raise MigrationError("upstream %d (%r) has no port" % (index + 1, entry))
    try:
        weight = int(weight) if weight else DEFAULT_WEIGHT
    except ValueError:
        raise MigrationError("upstream %d (%r) has a weight that is not a number" % (index + 1, entry))
    return ("upstream-%d" % (index + 1), address, weight)


def parse_simple_yaml(text):
    """The subset of YAML 1.x files used: 'key: value' lines and '- item' lists."""
    data, current = {}, None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if line.startswith("  - ") or line.startswith("- "):
            if current is None:
                raise MigrationError("list item outside a key: %r" % raw)
            data.setdefault(current, []).append(line.split("- ", 1)[1].strip())
            continue
        key, _, value = line.partition(":")
        current = key.strip()
        if value.strip():
            data[current] = value.strip()
    return data


def to_toml(data, warnings):
    out = ["schema = %d" % TARGET_SCHEMA, ""]
    if "port" in data:
        out.append("listen_port = %s" % data["port"])
    for key in DROPPED_KEYS:
        if key in data:
            warnings.append("dropped %s (no 2.x equivalent)" % key)
    for i, entry in enumerate(data.get("upstreams", [])):
        name, address, weight = parse_upstream(entry, i)
        out += ["", "[[upstream]]", 'name = "%s"' % name, 'address = "%s"' % address, "weight = %d" % weight]
    limits = data.get("rate_per_sec")
    if limits:
        out += ["", "[limits]", "default_rate_per_sec = %s" % limits]
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if os.path.exists(args.target) and not args.force:
        print("%s exists; use --force to overwrite" % args.target, file=sys.stderr)
        return 2
    with open(args.source, encoding="utf-8") as f:
        data = parse_simple_yaml(f.read())
    warnings = []
    try:
        toml = to_toml(data, warnings)
    except MigrationError as e:
        print("cannot migrate: %s" % e, file=sys.stderr)
        return 1
    with open(args.target, "w", encoding="utf-8") as f:
        f.write(toml)
    for w in warnings:
        print("warning: " + w, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
