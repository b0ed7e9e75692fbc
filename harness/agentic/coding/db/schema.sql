-- Billing database of the tollgate proxy (PostgreSQL 15).
--
-- API keys belong to accounts; each account is on a plan that sets its rate limit and its
-- monthly allowance. The log collector loads the agent's batches into request_log; a nightly
-- job rolls them up into usage_daily, which tools/billing.py invoices from (queries in
-- db/queries.sql).

CREATE TABLE plans (
    plan_id         text PRIMARY KEY,
    display_name    text NOT NULL,
    -- Refill rate of the plan's keys (tokens per second); see [limits] in tollgate.toml.
    rate_per_sec    numeric(8, 3) NOT NULL CHECK (rate_per_sec > 0),
    -- Requests included each month before overage is billed.
    monthly_allowance bigint NOT NULL CHECK (monthly_allowance >= 0),
    -- Price per started block of 1000 requests above the allowance, in euro cents.
    overage_cents_per_block integer NOT NULL,
    base_fee_cents  integer NOT NULL DEFAULT 0
);

INSERT INTO plans (plan_id, display_name, rate_per_sec, monthly_allowance, overage_cents_per_block, base_fee_cents) VALUES
    ('free',       'Free',       1.250,     20000,  0,    0),
    ('starter',    'Starter',    4.750,    350000, 37, 2900),
    ('business',   'Business',  18.000,   4200000, 23, 24900),
    ('enterprise', 'Enterprise', 95.000, 60000000, 11, 189000);

CREATE TABLE accounts (
    account_id      bigserial PRIMARY KEY,
    name            text NOT NULL,
    plan_id         text NOT NULL REFERENCES plans (plan_id),
    billing_email   text NOT NULL,
    -- Accounts on a trial are not invoiced until trial_ends.
    trial_ends      date,
    created_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz
);

CREATE TABLE api_keys (
    -- The value clients send in the x-tollgate-key header.
    key_id          text PRIMARY KEY CHECK (length(key_id) BETWEEN 1 AND 200),
    account_id      bigint NOT NULL REFERENCES accounts (account_id),
    -- tg_hash_hex of the key (native/tg_hash.c): what the proxy logs instead of the key.
    key_hash        char(16) NOT NULL UNIQUE,
    label           text,
    revoked_at      timestamptz
);

CREATE INDEX api_keys_account ON api_keys (account_id) WHERE revoked_at IS NULL;

-- One row per request, as shipped by tollgate-agent; partitioned by day, kept 35 days.
CREATE TABLE request_log (
    ts              timestamptz NOT NULL,
    host            text NOT NULL,
    route           text NOT NULL,
    key_hash        char(16),
    status          smallint NOT NULL,
    ms              real NOT NULL
) PARTITION BY RANGE (ts);

CREATE TABLE usage_daily (
    day             date NOT NULL,
    key_hash        char(16) NOT NULL,
    route           text NOT NULL,
    requests        bigint NOT NULL,
    -- Requests refused with 429; not billed.
    throttled       bigint NOT NULL,
    p99_ms          real,
    PRIMARY KEY (day, key_hash, route)
);

CREATE TABLE invoices (
    invoice_id      bigserial PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES accounts (account_id),
    period_start    date NOT NULL,
    -- Exclusive: the first day of the next period.
    period_end      date NOT NULL,
    billed_requests bigint NOT NULL,
    amount_cents    integer NOT NULL,
    issued_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, period_start)
);

-- The retention job drops request_log partitions older than this many days.
CREATE FUNCTION request_log_retention_days() RETURNS integer
    LANGUAGE sql IMMUTABLE AS $$ SELECT 35 $$;

-- Live keys with their plan, for the proxy's hourly key sync (see db/queries.sql).
CREATE VIEW live_keys AS
SELECT k.key_id, k.key_hash, a.account_id, p.plan_id, p.rate_per_sec
FROM api_keys k
JOIN accounts a USING (account_id)
JOIN plans p USING (plan_id)
WHERE k.revoked_at IS NULL
  AND a.closed_at IS NULL;
