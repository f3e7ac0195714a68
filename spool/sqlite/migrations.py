"""Versioned schema of the SQLite spool.

``PRAGMA user_version`` holds the version; each entry of ``MIGRATIONS`` moves
the database from version *i* to *i + 1* inside one transaction.  Never edit a
released migration: append a new one.
"""
from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str | tuple[str, ...], ...] = (
    # 1: payloads, envelopes, deliveries, business statuses, the event log.
    """
    CREATE TABLE payloads (
        sha256      TEXT PRIMARY KEY,
        size        INTEGER NOT NULL,
        data        BLOB,                 -- inline when small
        path        TEXT,                 -- relative to data_dir/payloads otherwise
        created_at  REAL NOT NULL
    );
    CREATE TABLE envelopes (
        id           TEXT PRIMARY KEY,    -- message id
        kind         TEXT NOT NULL,       -- edoc | status
        sender       TEXT NOT NULL,
        dedup_key    TEXT NOT NULL,       -- DocumentId (edoc) or sha256 (status)
        document_id  TEXT,
        sha256       TEXT NOT NULL,
        size         INTEGER NOT NULL,
        subject      TEXT,
        code         TEXT,
        status_code  TEXT,
        response_for TEXT,                -- original envelope id, for a status
        signature    TEXT NOT NULL,       -- JSON: result, detail, signer
        origin       TEXT NOT NULL,       -- ingress: http, hub, adapter name
        received_at  REAL NOT NULL,
        UNIQUE (sender, dedup_key)
    );
    CREATE INDEX envelopes_response_for ON envelopes(response_for);
    CREATE INDEX envelopes_sha256 ON envelopes(sha256);
    CREATE TABLE deliveries (
        id               INTEGER PRIMARY KEY,
        envelope_id      TEXT NOT NULL REFERENCES envelopes(id),
        recipient        TEXT NOT NULL,
        route            TEXT NOT NULL,
        state            TEXT NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        crashes          INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  REAL NOT NULL,
        expires_at       REAL NOT NULL,
        created_at       REAL NOT NULL,
        updated_at       REAL NOT NULL,
        last_error       TEXT,
        fetched_at       REAL,
        business_status  TEXT,
        business_status_at REAL,
        UNIQUE (envelope_id, recipient)
    );
    CREATE INDEX deliveries_due ON deliveries(state, next_attempt_at);
    CREATE INDEX deliveries_inbox ON deliveries(recipient, state, id);
    CREATE INDEX deliveries_route ON deliveries(route, state);
    CREATE TABLE statuses (
        id                 INTEGER PRIMARY KEY,
        envelope_id        TEXT NOT NULL,  -- the original document
        organ              TEXT NOT NULL,  -- who sent the status
        status_code        TEXT NOT NULL,
        description        TEXT,
        timestamp          TEXT,
        status_envelope_id TEXT NOT NULL,
        received_at        REAL NOT NULL
    );
    CREATE INDEX statuses_envelope ON statuses(envelope_id);
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY,   -- dense, assigned by the single writer
        at          REAL NOT NULL,
        kind        TEXT NOT NULL,
        message_id  TEXT,
        delivery_id INTEGER,
        organ       TEXT,
        state       TEXT,
        detail      TEXT NOT NULL,         -- JSON
        prev_hash   TEXT NOT NULL,
        hash        TEXT NOT NULL
    );
    CREATE INDEX events_message ON events(message_id);
    """,
    # 2: signed receipts, signed checkpoints of the event chain, small settings.
    """
    CREATE TABLE receipts (
        id              TEXT PRIMARY KEY,
        event_id        INTEGER NOT NULL UNIQUE,  -- the event the receipt attests
        message_id      TEXT NOT NULL,
        event           TEXT NOT NULL,            -- accepted | delivered | failed | status
        sender          TEXT NOT NULL,
        recipient       TEXT,
        state           TEXT,
        business_status TEXT,
        at              REAL NOT NULL,
        xml             BLOB NOT NULL             -- signed by the hub
    );
    CREATE INDEX receipts_message ON receipts(message_id);
    CREATE INDEX receipts_sender ON receipts(sender, at);
    CREATE INDEX receipts_recipient ON receipts(recipient, at);
    CREATE INDEX receipts_at ON receipts(at);
    CREATE TABLE checkpoints (
        id          INTEGER PRIMARY KEY,
        at          REAL NOT NULL,
        event_id    INTEGER NOT NULL,             -- the chain head it covers
        head_hash   TEXT NOT NULL,
        xml         BLOB NOT NULL                 -- signed by the hub
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 3: the queue manager's scans stay proportional to the work due, not to the
    # backlog: due/next_due_at read (route, state, next_attempt_at) for the
    # dispatched routes only, the lifetime sweep reads (state, expires_at).
    """
    CREATE INDEX deliveries_dispatch ON deliveries(route, state, next_attempt_at);
    CREATE INDEX deliveries_expiry ON deliveries(state, expires_at);
    DROP INDEX deliveries_route;
    """,
    # 4: the bytes the spool holds, kept by triggers instead of summed over
    # every payload row each time backpressure looks (a full scan at 1,000,000
    # documents).  Statements given one by one: trigger bodies hold ';'.
    (
        "CREATE TABLE spool_totals (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "payload_bytes INTEGER NOT NULL)",
        "INSERT INTO spool_totals (id, payload_bytes) SELECT 1, COALESCE(SUM(size), 0) "
        "FROM payloads WHERE data IS NOT NULL OR path IS NOT NULL",
        "CREATE TRIGGER payloads_total_insert AFTER INSERT ON payloads "
        "WHEN NEW.data IS NOT NULL OR NEW.path IS NOT NULL BEGIN "
        "UPDATE spool_totals SET payload_bytes = payload_bytes + NEW.size WHERE id = 1; END",
        "CREATE TRIGGER payloads_total_update AFTER UPDATE OF data, path, size ON payloads BEGIN "
        "UPDATE spool_totals SET payload_bytes = payload_bytes "
        "- CASE WHEN OLD.data IS NOT NULL OR OLD.path IS NOT NULL THEN OLD.size ELSE 0 END "
        "+ CASE WHEN NEW.data IS NOT NULL OR NEW.path IS NOT NULL THEN NEW.size ELSE 0 END "
        "WHERE id = 1; END",
        "CREATE TRIGGER payloads_total_delete AFTER DELETE ON payloads "
        "WHEN OLD.data IS NOT NULL OR OLD.path IS NOT NULL BEGIN "
        "UPDATE spool_totals SET payload_bytes = payload_bytes - OLD.size WHERE id = 1; END",
    ),
    # 5: leases with an owner and a deadline, so an expired lease is reclaimed
    # while the hub runs and a node never takes back another node's live one.
    """
    ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
    ALTER TABLE deliveries ADD COLUMN lease_until REAL;
    CREATE INDEX deliveries_lease ON deliveries(state, lease_until);
    """,
    # 6: what the axis did to a document (irregularities, accepted and kept with
    # it), and the links of business documents: a revocation, update or
    # replacement to the documents it acts on, committed with the new envelope.
    """
    ALTER TABLE envelopes ADD COLUMN irregularities TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE links (
        id        INTEGER PRIMARY KEY,
        from_id   TEXT NOT NULL REFERENCES envelopes(id),  -- the revocation, update, replacement
        type      TEXT NOT NULL,                           -- revokes | updates | replaces
        to_id     TEXT NOT NULL REFERENCES envelopes(id),  -- the document it acts on
        event_id  INTEGER NOT NULL,                        -- from_id's accepted event
        detail    TEXT NOT NULL DEFAULT '{}',              -- JSON: an update's receivers
        UNIQUE (from_id, type, to_id)
    );
    CREATE INDEX links_to ON links(to_id);
    """,
)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring ``conn``'s database to the newest version; return that version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(f"spool schema version {version} is newer than this hub "
                           f"({len(MIGRATIONS)}); upgrade the hub")
    for number in range(version, len(MIGRATIONS)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            step = MIGRATIONS[number]
            for statement in (step if isinstance(step, tuple) else _statements(step)):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT first; split on ';' instead (no ';' inside our DDL).
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
