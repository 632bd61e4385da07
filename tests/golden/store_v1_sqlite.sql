-- A store file as matchreplay wrote it at schema version 1 (before leases):
-- sqlite3 iterdump of tests/golden/README.md's fixture; load with executescript.
BEGIN TRANSACTION;
CREATE TABLE batches (
    position INTEGER PRIMARY KEY,  -- global position of the batch's LAST event
    mkey INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    base_tick INTEGER NOT NULL,
    last_tick INTEGER NOT NULL,
    first_id BLOB NOT NULL,        -- 16 bytes, big-endian
    blob BLOB NOT NULL,            -- replay.codec.encode_batch
    types INTEGER,                 -- recorder.type_mask of the batch's types (NULL: unknown)
    checksum BLOB                  -- recorder.batch_checksum (NULL: stored before checksums)
);
INSERT INTO "batches" VALUES(4,1,1,4,0,0,X'00000000000000010000000000000000',X'9496060100000000960601000100009606010002000096060100030000',64,X'35666257A4B22F7B');
INSERT INTO "batches" VALUES(6,2,1,2,0,0,X'00000000000000020000000000000000',X'929606010000000096060100010000',64,X'2D5E6F6EC4771A6B');
INSERT INTO "batches" VALUES(10,1,5,4,1,1,X'00000000000000010000000000000004',X'94960601000002FF960601000102FF960601000202FF960601000302FF',64,X'BBE0C43B3438CD7E');
CREATE TABLE keyframes (
    mkey INTEGER NOT NULL,
    tick INTEGER NOT NULL,
    format_version INTEGER NOT NULL,
    data BLOB NOT NULL,
    checksum BLOB NOT NULL,
    PRIMARY KEY (mkey, tick)
) WITHOUT ROWID;
INSERT INTO "keyframes" VALUES(1,1,1,X'7374617465',X'63636363636363636363636363636363');
CREATE TABLE matches (
    mkey INTEGER PRIMARY KEY,
    match_id TEXT NOT NULL UNIQUE,
    game TEXT NOT NULL,
    rules_version TEXT NOT NULL,
    tick_rate INTEGER NOT NULL,
    players TEXT NOT NULL,       -- JSON array of player ids
    settings TEXT NOT NULL,      -- JSON object
    seed INTEGER NOT NULL,
    created_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}'  -- JSON object: MatchRecord.options
);
INSERT INTO "matches" VALUES(1,'old-running','contract-game','1.0',30,'["alice", "bob"]','{"map": "arena"}',42,1000.0,NULL,'running','{}');
INSERT INTO "matches" VALUES(2,'old-ended','contract-game','1.0',30,'["carol"]','{}',7,1001.0,1002.0,'ended','{}');
CREATE INDEX matches_created ON matches(created_at);
CREATE UNIQUE INDEX batches_seq ON batches(mkey, first_seq);
CREATE INDEX batches_tick ON batches(mkey, last_tick);
COMMIT;
PRAGMA user_version=1;
