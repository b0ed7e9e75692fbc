-- Named queries of the tollgate billing database (schema in db/schema.sql). tools/billing.py
-- loads this file and runs a query by the name after "-- name:"; parameters are :name.
-- Periods are half-open: period_start is included, period_end (the 1st of the next month) is not.

-- name: billable_accounts
-- Accounts to invoice for a period: open, and past any trial by the period's end.
SELECT a.account_id, a.name, a.billing_email, p.plan_id, p.monthly_allowance,
       p.overage_cents_per_block, p.base_fee_cents
FROM accounts a
JOIN plans p USING (plan_id)
WHERE a.closed_at IS NULL
  AND (a.trial_ends IS NULL OR a.trial_ends < :period_end)
  AND NOT EXISTS (
      SELECT 1 FROM invoices i
      WHERE i.account_id = a.account_id AND i.period_start = :period_start)
ORDER BY a.account_id;

-- name: usage_by_account
-- Requests of one account in a period, throttled ones excluded.
SELECT coalesce(sum(u.requests - u.throttled), 0) AS billed_requests
FROM usage_daily u
JOIN api_keys k USING (key_hash)
WHERE k.account_id = :account_id
  AND u.day BETWEEN :period_start AND :period_end;

-- name: usage_by_route
-- The routes an account used most in a period, for the invoice's breakdown.
SELECT u.route, sum(u.requests - u.throttled) AS requests, max(u.p99_ms) AS worst_p99_ms
FROM usage_daily u
JOIN api_keys k USING (key_hash)
WHERE k.account_id = :account_id
  AND u.day >= :period_start AND u.day < :period_end
GROUP BY u.route
ORDER BY requests DESC
LIMIT 12;

-- name: insert_invoice
INSERT INTO invoices (account_id, period_start, period_end, billed_requests, amount_cents)
VALUES (:account_id, :period_start, :period_end, :billed_requests, :amount_cents)
RETURNING invoice_id;

-- name: rollup_day
-- The nightly rollup of one day of request_log into usage_daily (idempotent).
INSERT INTO usage_daily (day, key_hash, route, requests, throttled, p99_ms)
SELECT :day::date, r.key_hash, r.route, count(*),
       count(*) FILTER (WHERE r.status = 429),
       percentile_disc(0.99) WITHIN GROUP (ORDER BY r.ms)
FROM request_log r
WHERE r.ts >= :day::date AND r.ts < :day::date + 1
  AND r.key_hash IS NOT NULL
GROUP BY r.key_hash, r.route
ON CONFLICT (day, key_hash, route) DO UPDATE
SET requests = excluded.requests, throttled = excluded.throttled, p99_ms = excluded.p99_ms;

-- name: heavy_throttling
-- Keys throttled on more than a share of their requests in the last 7 days (the support
-- team offers them a larger plan).
SELECT u.key_hash, k.account_id, sum(u.throttled)::float / sum(u.requests) AS throttled_share
FROM usage_daily u
JOIN api_keys k USING (key_hash)
WHERE u.day >= current_date - 7
GROUP BY u.key_hash, k.account_id
HAVING sum(u.throttled)::float / sum(u.requests) > :min_share
ORDER BY throttled_share DESC;

-- name: key_sync
-- What the proxy's hourly key sync loads: live keys and their plan's rate.
SELECT key_hash, plan_id, rate_per_sec FROM live_keys ORDER BY key_hash;
