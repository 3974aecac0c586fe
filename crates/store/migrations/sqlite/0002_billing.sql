-- Billing is applied exactly once per request: the usage writer flips `billed` in the same
-- transaction that moves the money, and only moves it when the flip happened.
ALTER TABLE usage_records ADD COLUMN billed INTEGER NOT NULL DEFAULT 0;
