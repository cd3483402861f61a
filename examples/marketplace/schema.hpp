// POP Market's SQLite schema: everything that is not on the chain (docs/marketplace.md
// says which data lives where, and why).
#pragma once

namespace popmarket {

inline constexpr const char* schema_sql = R"sql(
CREATE TABLE IF NOT EXISTS members (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,             -- Argon2id, salt and parameters inside
    address       TEXT NOT NULL UNIQUE,      -- the member's wallet on the chain
    key_pem       TEXT NOT NULL,             -- wallet key, encrypted under the password
    is_admin      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash  TEXT PRIMARY KEY,            -- SHA-256 of the cookie; the cookie is not stored
    member_id   INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    csrf        TEXT NOT NULL,
    key_pem     TEXT NOT NULL,               -- wallet key, encrypted under the cookie token
    expires_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS products (
    id            INTEGER PRIMARY KEY,
    seller_id     INTEGER NOT NULL REFERENCES members(id),
    title         TEXT NOT NULL,
    description   TEXT NOT NULL,
    price         INTEGER NOT NULL CHECK (price > 0),
    photo         BLOB,
    photo_type    TEXT,
    status        TEXT NOT NULL DEFAULT 'listed',   -- listed | reserved | sold
    listing_round INTEGER NOT NULL DEFAULT 0,       -- bumped when a trade falls through
    created_at    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS products_by_seller ON products(seller_id);
-- Every transaction the service signed, stored before it is first sent: a retry resends
-- these exact bytes, so it can never pay twice.
CREATE TABLE IF NOT EXISTS chain_txs (
    txid       TEXT PRIMARY KEY,
    signer     TEXT NOT NULL,                -- address
    nonce      INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    tx_json    TEXT NOT NULL,
    status     TEXT NOT NULL,                -- pending | committed | failed
    height     INTEGER,
    block_hash TEXT,
    error      TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chain_txs_pending ON chain_txs(signer, status);
CREATE TABLE IF NOT EXISTS charges (
    id         INTEGER PRIMARY KEY,
    member_id  INTEGER NOT NULL REFERENCES members(id),
    amount     INTEGER NOT NULL CHECK (amount > 0),
    status     TEXT NOT NULL,                -- requested | approving | approved | rejected
    txid       TEXT REFERENCES chain_txs(txid),
    decided_by TEXT,                         -- admin username, or "auto"
    note       TEXT,
    created_at INTEGER NOT NULL,
    decided_at INTEGER
);
CREATE TABLE IF NOT EXISTS trades (
    trade_id    TEXT PRIMARY KEY,            -- the escrow's id on the chain
    product_id  INTEGER NOT NULL REFERENCES products(id),
    buyer_id    INTEGER NOT NULL REFERENCES members(id),
    seller_id   INTEGER NOT NULL REFERENCES members(id),
    amount      INTEGER NOT NULL,
    deadline    INTEGER NOT NULL,            -- chain height after which the buyer may reclaim
    status      TEXT NOT NULL,  -- opening | open | releasing | refunding | released | refunded | failed
    open_txid   TEXT NOT NULL REFERENCES chain_txs(txid),
    close_txid  TEXT REFERENCES chain_txs(txid),
    close_kind  TEXT,                        -- escrow_release | escrow_refund
    request_id  TEXT,                        -- the client's id for the purchase, if it sent one
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS trades_by_product ON trades(product_id);
CREATE TABLE IF NOT EXISTS reviews (
    trade_id   TEXT PRIMARY KEY REFERENCES trades(trade_id),
    buyer_id   INTEGER NOT NULL REFERENCES members(id),
    seller_id  INTEGER NOT NULL REFERENCES members(id),
    rating     INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body       TEXT NOT NULL,
    digest     TEXT NOT NULL,                -- what the anchoring transaction carries
    txid       TEXT NOT NULL REFERENCES chain_txs(txid),
    status     TEXT NOT NULL,                -- anchoring | anchored
    created_at INTEGER NOT NULL
);
)sql";

// Usernames are unique without regard to ASCII case (SQLite's lower() folds only A-Z, and
// names are ASCII). Created apart from the tables: on a database from before this rule that
// holds two names differing only in case it fails, and the plain index below is made instead.
inline constexpr const char* members_nocase_index_sql =
    "CREATE UNIQUE INDEX IF NOT EXISTS members_username_nocase ON members(lower(username));";
inline constexpr const char* members_folded_index_sql =
    "CREATE INDEX IF NOT EXISTS members_username_folded ON members(lower(username));";

} // namespace popmarket
