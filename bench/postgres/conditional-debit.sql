-- What teams hand-roll quotas with: a conditional debit, one row per
-- account, durable on commit. pgbench runs this as the baseline Reckon's
-- PostgreSQL backend is compared with (scripts/bench-postgres).
\set id random(1, :accounts)
UPDATE quota SET used = used + 1 WHERE id = :id AND used + 1 <= allowed;
