#!/usr/bin/env python3
"""Monthly invoicing of tollgate API usage.

For every billable account (db/queries.sql, billable_accounts) the script sums the month's
requests (usage_by_account), bills the plan's base fee plus every started block of
BLOCK_SIZE requests above the allowance, and records the invoice (insert_invoice).
Throttled requests (429) are never billed. Run on the 1st for the month before:

    billing.py --dsn postgresql://billing@db.internal/tollgate --month 2026-11
"""

import argparse
import datetime
import os
import re
import sys

import psycopg2

# Requests per overage block; a started block is billed whole.
BLOCK_SIZE = 1000

# Invoices below this amount (euro cents) are not issued; the usage is billed next month.
MIN_INVOICE_CENTS = 150

# VAT added to every invoice (the billing entity is in the Netherlands).
VAT_RATE = 0.21

# Where the named queries are, relative to this script.
QUERIES_FILE = os.path.join(os.path.dirname(__file__), "..", "db", "queries.sql")

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_queries(path=QUERIES_FILE):
    """{name: sql} of every '-- name:' section of the file, with :param turned into %(param)s."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    parts = _NAME.split(text)
    queries = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        sql = "\n".join(l for l in body.splitlines() if not l.startswith("--")).strip()
        queries[name] = re.sub(r"(?<!:):(\w+)", r"%(\1)s", sql)
    return queries


def month_bounds(month):
    """'2026-11' -> (date(2026, 11, 1), date(2026, 12, 1)): a half-open period."""
    start = datetime.datetime.strptime(month, "%Y-%m").date()
    end = (start.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)
    return start, end


def overage_blocks(requests, allowance):
    """Started blocks of BLOCK_SIZE requests above the allowance."""
    over = max(0, requests - allowance)
    return over // BLOCK_SIZE


def invoice_amount(account, billed_requests):
    """Amount in cents, VAT included: base fee plus the overage blocks at the plan's price."""
    net = account["base_fee_cents"] + overage_blocks(
        billed_requests, account["monthly_allowance"]
    ) * account["overage_cents_per_block"]
    return int(round(net * (1 + VAT_RATE)))


def rows(cur, queries, name, **params):
    cur.execute(queries[name], params)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def run_period(conn, queries, start, end, dry_run):
    """Invoices every billable account for [start, end); returns (issued, skipped, total cents)."""
    issued = skipped = total = 0
    period = {"period_start": start, "period_end": end}
    with conn.cursor() as cur:
        for account in rows(cur, queries, "billable_accounts", **period):
            (usage,) = rows(cur, queries, "usage_by_account", account_id=account["account_id"], **period)
            billed = int(usage["billed_requests"])
            amount = invoice_amount(account, billed)
            if amount < MIN_INVOICE_CENTS:
                skipped += 1
                continue
            if not dry_run:
                cur.execute(
                    queries["insert_invoice"],
                    dict(period, account_id=account["account_id"], billed_requests=billed, amount_cents=amount),
                )
            print("%-28s %-10s %12d req %10.2f EUR" % (account["name"], account["plan_id"], billed, amount / 100))
            issued += 1
            total += amount
    if dry_run:
        conn.rollback()
    else:
        conn.commit()
    return issued, skipped, total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("TOLLGATE_BILLING_DSN"))
    parser.add_argument("--month", required=True, help="YYYY-MM, the month to invoice")
    parser.add_argument("--dry-run", action="store_true", help="compute and print, write nothing")
    args = parser.parse_args(argv)
    if not args.dsn:
        print("no database: pass --dsn or set TOLLGATE_BILLING_DSN", file=sys.stderr)
        return 2
    start, end = month_bounds(args.month)
    conn = psycopg2.connect(args.dsn)
    try:
        issued, skipped, total = run_period(conn, load_queries(), start, end, args.dry_run)
    finally:
        conn.close()
    print("%d invoices, %d below the minimum, %.2f EUR" % (issued, skipped, total / 100))
    return 0


if __name__ == "__main__":
    sys.exit(main())
