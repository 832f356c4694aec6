-- A node database in the engine layout before migration 0002_superseded (made by
-- riversync at commit a516683): north, epoch 5 then 6, whose yield_own moved its local
-- events north/5/2 and north/5/3 off their ids by negating seq (jids 2 and 3),
-- re-issued them as north/6/1 and north/6/2, then pulled the hub's north/5/2 (jid 6).
-- The hub's north/5/3 and north/5/4 are not pulled yet.
BEGIN TRANSACTION;
CREATE TABLE _rs_cursors (name TEXT PRIMARY KEY, epoch INTEGER NOT NULL,
            seq INTEGER NOT NULL);
CREATE TABLE _rs_journal (
            jid INTEGER PRIMARY KEY,
            node TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
            hlc INTEGER NOT NULL, kind TEXT NOT NULL, tbl TEXT NOT NULL, pk TEXT NOT NULL,
            source TEXT, body BLOB NOT NULL, chain BLOB);
INSERT INTO "_rs_journal" VALUES(1,'north',5,1,112099590144000000,'create','players','P-0','local',X'9CA6637265617465A56E6F7274680501CF018E41FBBA00000001A7706C6179657273A3502D30A46E6F7261A5636C65726BC281A966756C6C5F6E616D65A3502D30',X'DA8CD3BF13FA14B69585A99874C1E7C28DFB624615AC89D0154B76FA018D2A3D');
INSERT INTO "_rs_journal" VALUES(2,'north',5,-2,112099590144065536,'create','players','HG0','local',X'9CA6637265617465A56E6F7274680502CF018E41FBBA01000001A7706C6179657273A3484730A46E6F7261A5636C65726BC281A966756C6C5F6E616D65A3484730',X'D19CD0DDA4FE709211A87D54CEC1162543E924995044BE169751E6A0F8F752A3');
INSERT INTO "_rs_journal" VALUES(3,'north',5,-3,112099590144131072,'create','players','HG1','local',X'9CA6637265617465A56E6F7274680503CF018E41FBBA02000001A7706C6179657273A3484731A46E6F7261A5636C65726BC281A966756C6C5F6E616D65A3484731',X'7092EB471E84FECCC6ABC72542E24D1BBA3E8B7CAE756F2CFF7465A7C8585076');
INSERT INTO "_rs_journal" VALUES(4,'north',6,1,112099590144655360,'create','players','HG0','local:re-issued from epoch 5',X'9CA6637265617465A56E6F7274680601CF018E41FBBA0A000001A7706C6179657273A3484730A46E6F7261A5636C65726BC281A966756C6C5F6E616D65A3484730',NULL);
INSERT INTO "_rs_journal" VALUES(5,'north',6,2,112099590144655361,'create','players','HG1','local:re-issued from epoch 5',X'9CA6637265617465A56E6F7274680602CF018E41FBBA0A000101A7706C6179657273A3484731A46E6F7261A5636C65726BC281A966756C6C5F6E616D65A3484731',X'CFB4CEA69FE0D342CEBCEA56CC03ECAD5A1FD07A322A903EB598B3D69A7F9245');
INSERT INTO "_rs_journal" VALUES(6,'north',5,2,112099118284800000,'create','players','HF0',NULL,X'9CA6637265617465A56E6F7274680502CF018E418DDD00000001A7706C6179657273A3484630A46E6F7261A178C281A966756C6C5F6E616D65A3484630',X'CD78EEBA138DAFF76C066B95C71978B137A3FC94AD9FED2B5BD244C2F55E94ED');
CREATE TABLE _rs_meta (key TEXT PRIMARY KEY, value);
INSERT INTO "_rs_meta" VALUES('node_id','north');
INSERT INTO "_rs_meta" VALUES('epoch',6);
INSERT INTO "_rs_meta" VALUES('schema_version',1);
INSERT INTO "_rs_meta" VALUES('last_hlc',112099590145310720);
INSERT INTO "_rs_meta" VALUES('seq:5',3);
INSERT INTO "_rs_meta" VALUES('seq:6',2);
CREATE TABLE _rs_migrations (name TEXT PRIMARY KEY, applied INTEGER);
INSERT INTO "_rs_migrations" VALUES('0001_engine',1796326027);
CREATE TABLE _rs_origins (
            node TEXT NOT NULL, epoch INTEGER NOT NULL,
            contiguous INTEGER NOT NULL DEFAULT 0, acked INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (node, epoch)) WITHOUT ROWID;
INSERT INTO "_rs_origins" VALUES('north',5,2,2);
INSERT INTO "_rs_origins" VALUES('north',6,2,0);
CREATE TABLE _rs_rows (
            tbl TEXT NOT NULL, pk TEXT NOT NULL, known INTEGER NOT NULL, live INTEGER NOT NULL,
            created INTEGER NOT NULL, owner0 TEXT, transfers BLOB, ppk TEXT,
            mh INTEGER, mn TEXT, me INTEGER, jids BLOB NOT NULL,
            PRIMARY KEY (tbl, pk)) WITHOUT ROWID;
INSERT INTO "_rs_rows" VALUES('players','HF0',1,1,1,'north',NULL,NULL,112099118284800000,'north',5,X'0600000000000000');
INSERT INTO "_rs_rows" VALUES('players','HG0',1,1,1,'north',NULL,NULL,112099590144655360,'north',6,X'0400000000000000');
INSERT INTO "_rs_rows" VALUES('players','HG1',1,1,1,'north',NULL,NULL,112099590144655361,'north',6,X'0500000000000000');
INSERT INTO "_rs_rows" VALUES('players','P-0',1,1,1,'north',NULL,NULL,112099590144000000,'north',5,X'0100000000000000');
CREATE TABLE _rs_status (
            jid INTEGER PRIMARY KEY, tbl TEXT NOT NULL, pk TEXT NOT NULL,
            status TEXT NOT NULL, cause TEXT NOT NULL, wtbl TEXT, wpk TEXT,
            closed_by TEXT, decision TEXT);
INSERT INTO "_rs_status" VALUES(2,'players','HG0','resequenced','the hub holds another event as north/5/2; re-issued as epoch 6 seq 1',NULL,NULL,NULL,NULL);
INSERT INTO "_rs_status" VALUES(3,'players','HG1','resequenced','the hub holds another event as north/5/3; re-issued as epoch 6 seq 2',NULL,NULL,NULL,NULL);
CREATE TABLE "adjustments" ("adjustment_id" TEXT PRIMARY KEY NOT NULL, "registration_id" TEXT, "amount" INTEGER, "reason" TEXT, "made_on" TEXT) STRICT;
CREATE TABLE "leagues" ("league_id" TEXT PRIMARY KEY NOT NULL, "office_id" TEXT, "name" TEXT, "sport" TEXT, "fee" INTEGER, "active" INTEGER) STRICT;
CREATE TABLE "offices" ("office_id" TEXT PRIMARY KEY NOT NULL, "name" TEXT, "city" TEXT, "phone" TEXT) STRICT;
CREATE TABLE "payments" ("payment_id" TEXT PRIMARY KEY NOT NULL, "registration_id" TEXT, "amount" INTEGER, "paid_on" TEXT, "method" TEXT, "note" TEXT) STRICT;
CREATE TABLE "players" ("player_id" TEXT PRIMARY KEY NOT NULL, "full_name" TEXT, "born_on" TEXT, "phone" TEXT, "email" TEXT, "credit_limit" INTEGER) STRICT;
INSERT INTO "players" VALUES('P-0','P-0',NULL,NULL,NULL,NULL);
INSERT INTO "players" VALUES('HG0','HG0',NULL,NULL,NULL,NULL);
INSERT INTO "players" VALUES('HG1','HG1',NULL,NULL,NULL,NULL);
INSERT INTO "players" VALUES('HF0','HF0',NULL,NULL,NULL,NULL);
CREATE TABLE "registrations" ("registration_id" TEXT PRIMARY KEY NOT NULL, "team_id" TEXT, "session_id" TEXT, "player_id" TEXT, "status" TEXT, "registered_on" TEXT) STRICT;
CREATE TABLE "sessions" ("session_id" TEXT PRIMARY KEY NOT NULL, "league_id" TEXT, "name" TEXT, "starts_on" TEXT, "ends_on" TEXT) STRICT;
CREATE TABLE "teams" ("team_id" TEXT PRIMARY KEY NOT NULL, "league_id" TEXT, "name" TEXT, "coach" TEXT, "phone" TEXT, "note" TEXT) STRICT;
CREATE UNIQUE INDEX _rs_journal_id ON _rs_journal(node, epoch, seq);
CREATE TRIGGER _rs_journal_no_delete BEFORE DELETE ON _rs_journal
            BEGIN SELECT RAISE(ABORT, 'the journal is append-only (it is the audit trail)'); END;
CREATE INDEX _rs_status_row ON _rs_status(tbl, pk);
CREATE INDEX _rs_status_wait ON _rs_status(wtbl, wpk) WHERE wtbl IS NOT NULL;
CREATE INDEX _rs_status_kind ON _rs_status(status);
CREATE INDEX _rs_rows_parent ON _rs_rows(ppk, tbl) WHERE ppk IS NOT NULL;
CREATE TRIGGER _rs_journal_no_update BEFORE UPDATE ON _rs_journal BEGIN SELECT RAISE(ABORT, 'the journal is append-only (it is the audit trail)'); END;
COMMIT;
