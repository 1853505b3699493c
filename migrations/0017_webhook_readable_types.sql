-- Scoped tokens (README "Authorization"): a webhook delivers only records
-- of the collections that every token which created or changed it could
-- read. NULL: every collection (a token without a scope claim, or one that
-- reads them all); otherwise the resource types (`deal`, `line_item`) left.
-- An update by a token that reads less narrows the list; nothing widens it.
-- Append-only: never edit a landed migration.

ALTER TABLE webhooks ADD COLUMN readable_types text[];
