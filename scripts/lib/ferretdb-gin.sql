-- Indexes FerretDB v1 can use, for the PostgreSQL cluster scripts/test,
-- scripts/soak and scripts/bench run it on (scripts/lib/servers.sh).
--
-- FerretDB v1 pushes an equality filter down to PostgreSQL as
-- `_jsonb->'<field>' @> '<value>'`. The indexes it creates for a
-- collection's MongoDB indexes are btree indexes on `_jsonb->'<field>'`,
-- which `@>` cannot use: every lookup by `_id` (a user's seq counter), by
-- `user` or by `topic` is a scan of the whole table (measured: 45-67 ms per
-- `find` by `_id` among 100,000 users, 0.6 ms with the index below). MongoDB
-- answers the same queries from its indexes; this gives FerretDB a GIN
-- index on each of those expressions, which serves `@>`, so that the
-- stand-in scales like the real thing. An event trigger adds them to the
-- tables FerretDB creates for edgepush's collections (FerretDB names a
-- table `<collection>_<hash>`): `_id` of the counter collections (`users`,
-- `topics`), `user` and `_id` of `messages` (where a user's counter lags,
-- the end of the log is found by `_id`: crates/mongo/src/batcher.rs),
-- `topic` of `topic_messages`; every other table gets `_id`. Topic
-- messages get no `_id` index of this kind: nothing looks them up by
-- `_id`, and a GIN index costs every insert. FerretDB does not know of
-- these indexes (listIndexes is unchanged) and they go with the table.
-- `fastupdate = off`: with PostgreSQL's default, new entries wait in a
-- pending list that every lookup reads through until a vacuum merges it;
-- under a stream of inserts a lookup of a recent message by `_id` took
-- 3-12 ms (measured with log_min_duration_statement), against well under
-- a millisecond with the entries in the index itself.
CREATE OR REPLACE FUNCTION edgepush_ferretdb_gin() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    obj record;
    field text;
BEGIN
    FOR obj IN SELECT * FROM pg_event_trigger_ddl_commands()
        WHERE command_tag = 'CREATE TABLE' AND object_type = 'table'
    LOOP
        -- FerretDB's own metadata table has its own indexes.
        IF obj.object_identity LIKE '%._ferretdb_%' THEN
            CONTINUE;
        END IF;
        field := CASE
            WHEN obj.object_identity ~ '\.topic_messages_[0-9a-f]+$' THEN 'topic'
            WHEN obj.object_identity ~ '\.messages_[0-9a-f]+$' THEN 'user'
            ELSE '_id'
        END;
        EXECUTE format('CREATE INDEX ON %s USING gin ((_jsonb->%L)) WITH (fastupdate = off)',
            obj.object_identity, field);
        IF field = 'user' THEN
            EXECUTE format('CREATE INDEX ON %s USING gin ((_jsonb->%L)) WITH (fastupdate = off)',
                obj.object_identity, '_id');
        END IF;
    END LOOP;
END;
$$;

CREATE EVENT TRIGGER edgepush_ferretdb_gin ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION edgepush_ferretdb_gin();

-- FerretDB sends its filters as prepared statements with the field name as
-- a parameter (`WHERE _jsonb->$1 @> $2`). After five executions PostgreSQL
-- may switch such a statement to a generic plan, in which `_jsonb->$1`
-- matches no index expression: every lookup by `_id` or `user` then scans
-- the table (measured: 5-11 ms per lookup of a recent message by `_id`,
-- and the sustained end-to-end row at ~120 msg/s, in some runs and not
-- others). Custom plans see the field name and use the indexes above.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = force_custom_plan',
        current_database());
END;
$$;
