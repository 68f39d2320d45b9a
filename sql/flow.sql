-- pg_jobqueue flow control: how many jobs of a queue, or of one concurrency key, may run at
-- once and start per period, and holds that keep a queue or a key back until a time.  Every
-- claim (dequeue, and through it the executors' and the sender's) picks its jobs here when
-- the queue has a limit.
--
-- Limits are exact: each count is taken under a lock its claim holds until it commits (the
-- queue's claim lock, the window's row, the key's internal lock: src/session/flow.rs), in a snapshot
-- taken after the lock, so two claims never both take the last slot.  Claims of different
-- keys never wait for each other; claims of a queue with a queue-wide limit take turns.

-- How many more of `queue`'s jobs may run now, for a limit of `concurrency` running at once.
-- Takes the queue's internal claim lock (held until commit), so that claimers of one queue
-- take turns and the count each tests stays exact until it claims.
CREATE FUNCTION job._free_slots(queue text, concurrency int)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM job._lock_handler_queue(queue);
    RETURN concurrency - (SELECT count(*) FROM (SELECT 1 FROM job.live_jobs l
                                                WHERE l.queue = _free_slots.queue AND l.state = 'running'
                                                LIMIT concurrency) r)::int;
END $$;

-- The flow-control row of (queue, key, shard), locked until this transaction ends; made on
-- first use.
CREATE FUNCTION job._rate_window(queue text, key text, shard smallint DEFAULT 0)
RETURNS job.rate_windows LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    w job.rate_windows;
BEGIN
    SELECT * INTO w FROM job.rate_windows r
     WHERE r.queue = _rate_window.queue AND r.key = _rate_window.key AND r.shard = _rate_window.shard FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO job.rate_windows AS r (queue, key, shard)
        VALUES (_rate_window.queue, _rate_window.key, _rate_window.shard)
        ON CONFLICT DO NOTHING;
        SELECT * INTO w FROM job.rate_windows r
         WHERE r.queue = _rate_window.queue AND r.key = _rate_window.key AND r.shard = _rate_window.shard FOR UPDATE;
    END IF;
    RETURN w;
END $$;

-- How many of `wanted` jobs may start now under the window of (queue, key, shard) ('': the
-- queue's own) for a limit of `rate_limit` starts per `rate_period` (NULL: no limit, only a
-- hold), and 0 while a hold lasts.  With `record`, they are counted as started.  When none may
-- start, the scheduler wakes the queue's consumers once one may.
CREATE FUNCTION job._rate_room(queue text, key text, rate_limit int, rate_period interval,
                               wanted int, record boolean, shard smallint DEFAULT 0)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    w job.rate_windows;
    t record;
    granted int;
    wake timestamptz;
BEGIN
    IF rate_limit IS NULL THEN
        -- Holds only: nothing to count, so nothing to lock or make.
        SELECT * INTO w FROM job.rate_windows r
         WHERE r.queue = _rate_room.queue AND r.key = _rate_room.key AND r.shard = 0;
        IF NOT FOUND OR w.held_until IS NULL OR w.held_until <= now() THEN
            RETURN wanted;
        END IF;
        RETURN 0;  -- rate_limit_pause set the scheduler's wake-up
    END IF;
    w := job._rate_window(queue, key, shard);
    IF w.held_until > now() THEN
        RETURN 0;
    END IF;
    SELECT * INTO t FROM job._rate_take(w.base, w.counts, (extract(epoch FROM rate_period) * 1000)::bigint,
                                         rate_limit, wanted, (extract(epoch FROM now()) * 1000)::bigint) t;
    granted := t.granted;
    IF record AND granted > 0 THEN
        UPDATE job.rate_windows r SET base = t.base, counts = t.counts
         WHERE r.queue = _rate_room.queue AND r.key = _rate_room.key AND r.shard = _rate_room.shard;
    ELSIF granted = 0 THEN
        wake := to_timestamp(t.next_at_ms / 1000.0);
        IF w.wake_at IS NULL OR w.wake_at > wake THEN
            UPDATE job.rate_windows r SET wake_at = wake
             WHERE r.queue = _rate_room.queue AND r.key = _rate_room.key AND r.shard = _rate_room.shard;
            PERFORM job._due_on_commit(wake);
        END IF;
    END IF;
    RETURN granted;
END $$;

-- For a claim of queue `q` with a rate limit: one of the queue's windows (its `shard`, with
-- `shard_limit`, its share of the limit) and how many of `wanted` jobs it lets start now
-- (`room`), the window locked until this transaction ends.  Windows another claim holds are
-- skipped, so claims in different transactions count side by side; the sum of the shares is
-- the limit, so no window of one period ever holds more starts in all.  A claim waits for a
-- window only when other claims hold every one.
CREATE FUNCTION job._queue_rate_room(q job.queues, wanted int, OUT shard smallint, OUT shard_limit int, OUT room int)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- One window per 16 starts of the limit, 8 at most: a claim takes at most its window's
    -- share at once, so small limits keep one window (claims of a queue limited to a few
    -- starts a second need no parallel counting) and a share is never below 16.
    shards int := greatest(1, least(8, q.rate_limit / 16));
    s smallint;
BEGIN
    room := 0;
    IF NOT EXISTS (SELECT 1 FROM job.rate_windows r WHERE r.queue = q.name AND r.key = '' AND r.shard = shards - 1) THEN
        INSERT INTO job.rate_windows (queue, key, shard)
        SELECT q.name, '', g FROM generate_series(0, shards - 1) g
        ON CONFLICT DO NOTHING;
    END IF;
    FOR s IN SELECT r.shard FROM job.rate_windows r
              WHERE r.queue = q.name AND r.key = '' AND r.shard < shards ORDER BY random() LOOP
        PERFORM FROM job.rate_windows r
          WHERE r.queue = q.name AND r.key = '' AND r.shard = s FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        shard := s;
        shard_limit := q.rate_limit / shards + (s < q.rate_limit % shards)::int;
        room := job._rate_room(q.name, '', shard_limit, q.rate_period, wanted, false, s);
        EXIT WHEN room > 0;
    END LOOP;
    IF shard IS NULL THEN
        shard := floor(random() * shards)::smallint;  -- every window is held: wait for one
        shard_limit := q.rate_limit / shards + (shard < q.rate_limit % shards)::int;
        room := job._rate_room(q.name, '', shard_limit, q.rate_period, wanted, false, shard);
    END IF;
END $$;

-- Up to `wanted` of queue `q`'s concurrency slots that are free (their job no longer holds a
-- lease), locked by this transaction: other claims skip them, and take other slots.  Each is
-- tested in a statement of its own, after its row is locked, so that it sees the commit of
-- the claim that last took it.
CREATE FUNCTION job._take_slots(q job.queues, wanted int)
RETURNS int[] LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    slots refcursor;
    s record;
    taken int[] := '{}';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM job.concurrency_slots cs WHERE cs.queue = q.name AND cs.slot = q.concurrency - 1) THEN
        -- Made by create_queue; made here too for a limit raised since (or rows not restored).
        INSERT INTO job.concurrency_slots (queue, slot)
        SELECT q.name, g FROM generate_series(0, q.concurrency - 1) g
        ON CONFLICT DO NOTHING;
    END IF;
    -- One row at a time (FETCH): a FOR loop would lock ten slots ahead.
    OPEN slots NO SCROLL FOR
        SELECT cs.slot, cs.job_id FROM job.concurrency_slots cs
         WHERE cs.queue = q.name AND cs.slot < q.concurrency
         ORDER BY cs.slot
         FOR UPDATE SKIP LOCKED;
    LOOP
        FETCH slots INTO s;
        EXIT WHEN NOT FOUND;
        CONTINUE WHEN s.job_id = ANY (ARRAY(SELECT l.id FROM job.live_jobs l
                                             WHERE l.id = s.job_id AND l.state = 'running'
                                               AND l.lease_expires_at > now()));
        taken := taken || s.slot;
        EXIT WHEN cardinality(taken) >= wanted;
    END LOOP;
    CLOSE slots;
    RETURN taken;
END $$;

-- Whether waiting job `job_id` of queue `q`, with these keys, may start now, `admitted`
-- holding the concurrency keys of the jobs this claim already took.  NULL when it may: it is
-- then locked for the caller.  Otherwise what refused it, which the caller remembers for the
-- rest of its claim: 'o:' or 's:' and the key, when the oldest job of its order or singleton
-- key runs or waits out a retry (it holds the key's place); 'c:' and the key,
-- when another transaction is claiming the concurrency key (this one then holds it until it
-- ends: src/session/flow.rs), key_concurrency of its jobs hold a lease, or its window is full or held;
-- '' when another claim has the job, or an older job of its order or singleton key waits (the
-- claim takes that one when it gets to it).  Each count is a statement of its own, after the key's
-- lock, so it sees every claim of the key that committed.
CREATE FUNCTION job._admit(q job.queues, job_id bigint, concurrency_key text, order_key text,
                           singleton_key text, admitted text[])
RETURNS text LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    older text;
BEGIN
    -- (A job has one of the two keys at most: _check_job_keys.  Two statements, each a range of
    -- its key's index: one with OR is planned as a walk of the primary key.)
    IF order_key IS NOT NULL THEN
        SELECT o.state INTO older FROM job.live_jobs o
         WHERE o.queue = q.name AND o.order_key = _admit.order_key AND o.id < job_id ORDER BY o.id LIMIT 1;
    ELSIF singleton_key IS NOT NULL THEN
        SELECT o.state INTO older FROM job.live_jobs o
         WHERE o.queue = q.name AND o.singleton_key = _admit.singleton_key AND o.id < job_id ORDER BY o.id LIMIT 1;
    END IF;
    IF older IS NOT NULL THEN
        -- An older job that runs or waits out a retry holds the key for this claim; one that
        -- waits goes first, when the claim gets to it.
        RETURN CASE WHEN older = 'waiting' THEN ''
                    WHEN order_key IS NOT NULL THEN 'o:' || order_key
                    ELSE 's:' || singleton_key END;
    END IF;
    IF concurrency_key IS NOT NULL AND (q.key_concurrency IS NOT NULL OR q.key_rate_limit IS NOT NULL OR q.holds) THEN
        IF NOT job._try_lock_key(q.name, concurrency_key) THEN
            RETURN 'c:' || concurrency_key;
        END IF;
        IF q.key_concurrency IS NOT NULL
           AND cardinality(array_positions(admitted, concurrency_key))
               + (SELECT count(*) FROM (SELECT 1 FROM job.live_jobs r
                                         WHERE r.queue = q.name AND r.concurrency_key = _admit.concurrency_key
                                           AND r.state = 'running' AND r.concurrency_key IS NOT NULL
                                           AND r.lease_expires_at > now()
                                         LIMIT q.key_concurrency) running) >= q.key_concurrency THEN
            RETURN 'c:' || concurrency_key;
        END IF;
    END IF;
    PERFORM FROM job.live_jobs n WHERE n.id = job_id AND n.state = 'waiting' FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN '';
    END IF;
    IF concurrency_key IS NOT NULL AND (q.key_rate_limit IS NOT NULL OR q.holds)
       AND job._rate_room(q.name, concurrency_key, q.key_rate_limit, q.key_rate_period, 1, true) = 0 THEN
        RETURN 'c:' || concurrency_key;
    END IF;
    RETURN NULL;
END $$;

-- A batch claim of a queue whose only limit per key is key_concurrency, in a few set-based
-- statements instead of a test per job (a batch of 100 from 1,000 keys made about 780 tests
-- and took 0.5 s under 8 claimers): the front of the queue in claim order (1,000 + 10 × wanted
-- jobs at most) without the keys at their limit, and at most key_concurrency jobs of each
-- other key, whose keys are tried in that order until `wanted` are taken (a key another
-- claim holds is left to it); the room of each key counted in a statement of its own, after
-- its lock; the candidates within their key's room locked SKIP LOCKED, up to `wanted`.
-- `crowded`: every job of the front belongs to a key at its limit, and more lie beyond it
-- (job._pick_limited then goes key by key).  A key whose last job another claim committed a
-- moment after the statement began turns out full once locked: the claim comes back short
-- rather than reading the front again (three rounds of it halved the throughput).
CREATE FUNCTION job._pick_by_key_sets(q job.queues, wanted int, OUT picked bigint[], OUT crowded boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    budget int := 1000 + 10 * wanted;
    seen bigint;
    open_count bigint;
    cand_ids bigint[];
    cand_keys text[];
    locked text[];
    rooms jsonb;
BEGIN
    picked := '{}';
    WITH front AS (
        SELECT n.id, n.concurrency_key, row_number() OVER (ORDER BY n.priority DESC, n.run_at, n.id) AS ord
          FROM (SELECT n.id, n.concurrency_key, n.priority, n.run_at FROM job.live_jobs n
                 WHERE n.queue = q.name AND n.state = 'waiting'
                 ORDER BY n.priority DESC, n.run_at, n.id
                 LIMIT budget) n
    ), busy AS (
        SELECT r.concurrency_key AS key FROM job.live_jobs r
         WHERE r.queue = q.name AND r.state = 'running' AND r.concurrency_key IS NOT NULL
           AND r.lease_expires_at > now()
         GROUP BY r.concurrency_key
        HAVING count(*) >= q.key_concurrency
    ), open AS (
        SELECT f.id, f.concurrency_key, f.ord,
               row_number() OVER (PARTITION BY f.concurrency_key ORDER BY f.ord) AS nth
          FROM front f LEFT JOIN busy b ON b.key = f.concurrency_key
         WHERE b.key IS NULL
    )
    SELECT (SELECT count(*) FROM front), (SELECT count(*) FROM open),
           array_agg(o.id ORDER BY o.ord), array_agg(o.concurrency_key ORDER BY o.ord)
      INTO seen, open_count, cand_ids, cand_keys
      FROM (SELECT o.id, o.concurrency_key, o.ord
              FROM (SELECT o.id, o.concurrency_key, o.ord FROM open o
                     WHERE o.concurrency_key IS NULL OR o.nth <= q.key_concurrency
                     ORDER BY o.ord) o
             -- Tried in claim order, as the rows come, until enough are taken: a key another
             -- claim holds is passed over, so claims running side by side spread over keys.
             WHERE o.concurrency_key IS NULL OR job._try_lock_key(q.name, o.concurrency_key)
             LIMIT wanted) o;
    crowded := seen >= budget AND open_count = 0;
    IF cand_ids IS NULL THEN
        RETURN;
    END IF;
    SELECT coalesce(array_agg(DISTINCT k), '{}') INTO locked FROM unnest(cand_keys) k WHERE k IS NOT NULL;
    SELECT coalesce(jsonb_object_agg(l.k, q.key_concurrency - r.n), '{}') INTO rooms
      FROM unnest(locked) l(k)
     CROSS JOIN LATERAL (SELECT count(*) AS n FROM job.live_jobs r
                          WHERE r.queue = q.name AND r.concurrency_key = l.k AND r.state = 'running'
                            AND r.concurrency_key IS NOT NULL AND r.lease_expires_at > now()) r;
    SELECT coalesce(array_agg(n.id), '{}') INTO picked
      FROM (SELECT n.id FROM job.live_jobs n
             WHERE n.id = ANY (ARRAY(SELECT c.id
                                       FROM (SELECT c.id, c.key, c.ord,
                                                    row_number() OVER (PARTITION BY c.key ORDER BY c.ord) AS nth
                                               FROM unnest(cand_ids, cand_keys) WITH ORDINALITY AS c(id, key, ord)) c
                                      WHERE c.key IS NULL OR c.nth <= (rooms ->> c.key)::int))
               AND n.state = 'waiting'
             ORDER BY n.priority DESC, n.run_at, n.id
             LIMIT wanted
             FOR UPDATE SKIP LOCKED) n;
END $$;

-- Up to `batch` waiting jobs of queue `q` that its limits let start now, locked for the caller
-- to claim: in claim order, or, in a fair queue, one per concurrency key in turn.  A job whose
-- key is at its limit is stepped over, so a saturated key never holds back the others:
-- - the keys at their key_concurrency are read first, in one range of the running-key index,
--   and their jobs are stepped over without a test; a key refused during the claim joins them
--   (a jsonb object used as a set: a lookup is a binary search, where an array's was a scan);
-- - a claim in claim order reads at most 1,000 + 10 × batch candidates.  Past that (a front
--   made of saturated keys' backlogs, or keys other claims took meanwhile) it goes key by key
--   as a fair claim does, once round: each concurrency key's best job, then each order or
--   singleton key's oldest, so a job behind a long saturated backlog is still found, at a
--   cost that grows with the number of keys, not of jobs.
CREATE FUNCTION job._pick_limited(q job.queues, batch int)
RETURNS bigint[] LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wanted int := batch;
    slots int[];
    rate record;
    picked bigint[] := '{}';
    admitted text[] := '{}';   -- the concurrency key of each keyed job picked
    refused jsonb := '{}';     -- 'c:', 'o:', 's:' and the key: held back for this claim
    candidates refcursor;
    c record;
    refusal text;
    examined int := 0;
    key_by_key boolean;
    general boolean;
    fair_key text;
    idle_rounds int := 0;
    picked_before int := 0;
BEGIN
    IF q.concurrency IS NOT NULL THEN
        slots := job._take_slots(q, wanted);
        wanted := cardinality(slots);
    END IF;
    IF wanted > 0 AND q.holds THEN
        wanted := job._rate_room(q.name, '', NULL, NULL, wanted, false);  -- a hold of the queue
    END IF;
    IF wanted > 0 AND q.rate_limit IS NOT NULL THEN
        rate := job._queue_rate_room(q, wanted);
        wanted := least(wanted, rate.room);
    END IF;
    IF wanted <= 0 THEN
        RETURN picked;  -- woken when a job finishes, or by the scheduler when the window allows
    END IF;
    IF NOT q.fair AND NOT q.serial_keys
       AND (q.key_concurrency IS NULL AND q.key_rate_limit IS NULL AND NOT q.holds) THEN
        SELECT coalesce(array_agg(n.id), '{}') INTO picked
          FROM (SELECT n.id FROM job.live_jobs n
                 WHERE n.queue = q.name AND n.state = 'waiting'
                 ORDER BY n.priority DESC, n.run_at, n.id
                 LIMIT wanted
                 FOR UPDATE SKIP LOCKED) n;
    ELSE
        general := true;
        IF wanted > 1 AND q.key_concurrency IS NOT NULL AND NOT q.fair AND NOT q.serial_keys
           AND q.key_rate_limit IS NULL AND NOT q.holds THEN
            -- A batch: by key sets.  (One job is found as fast job by job, and never missed
            -- because a key's last claim committed a moment after the statement began.)
            SELECT k.picked, k.crowded AND cardinality(k.picked) = 0 INTO picked, general
              FROM job._pick_by_key_sets(q, wanted) k;
        END IF;
        IF general THEN
            IF q.key_concurrency IS NOT NULL THEN
                SELECT coalesce(jsonb_object_agg('c:' || r.concurrency_key, true), '{}') INTO refused
                  FROM (SELECT r.concurrency_key FROM job.live_jobs r
                         WHERE r.queue = q.name AND r.state = 'running' AND r.concurrency_key IS NOT NULL
                           AND r.lease_expires_at > now()
                         GROUP BY r.concurrency_key
                        HAVING count(*) >= q.key_concurrency) r;
            END IF;
            -- Candidates in claim order from the front of the queue (at most 1,000 + 10 × batch,
            -- read without locking: each job is locked once admitted); past them, or in a fair
            -- queue from the start, key by key: from the key after the one this session served
            -- last (a fair queue; else from the first), each key's first job in claim order, and
            -- past the last key one job without a key, then from the first key again.
            key_by_key := q.fair;
            IF NOT q.fair THEN
                -- The LIMIT also makes it a range of the claim index: a cursor without one is
                -- planned for its first 10% (cursor_tuple_fraction), which for a large backlog
                -- is a sort of the whole queue.
                OPEN candidates NO SCROLL FOR
                    SELECT n.id, n.concurrency_key, n.order_key, n.singleton_key FROM job.live_jobs n
                     WHERE n.queue = q.name AND n.state = 'waiting'
                     ORDER BY n.priority DESC, n.run_at, n.id
                     LIMIT 1000 + 10 * wanted;
            END IF;
            fair_key := CASE WHEN q.fair THEN job._fair_cursor(q.id) END;
            LOOP
                IF NOT key_by_key THEN
                    FETCH candidates INTO c;
                    IF NOT FOUND THEN
                        EXIT WHEN examined < 1000 + 10 * wanted;  -- that was the whole queue
                        key_by_key := true;
                        CONTINUE;
                    END IF;
                    examined := examined + 1;
                    CONTINUE WHEN (c.concurrency_key IS NOT NULL AND refused ? ('c:' || c.concurrency_key))
                               OR (c.order_key IS NOT NULL AND refused ? ('o:' || c.order_key))
                               OR (c.singleton_key IS NOT NULL AND refused ? ('s:' || c.singleton_key));
                ELSE
                    IF fair_key IS NULL THEN
                        -- Round the keys again while the last round took a job (and once more
                        -- after a round begun after the cursor).
                        idle_rounds := CASE WHEN cardinality(picked) = picked_before THEN idle_rounds + 1 ELSE 0 END;
                        EXIT WHEN idle_rounds >= 2;
                        picked_before := cardinality(picked);
                    END IF;
                    SELECT n.concurrency_key INTO fair_key FROM job.live_jobs n
                     WHERE n.queue = q.name AND n.state = 'waiting' AND n.concurrency_key IS NOT NULL
                       AND n.concurrency_key > coalesce(fair_key, '')
                     ORDER BY n.concurrency_key LIMIT 1;
                    IF NOT FOUND THEN
                        fair_key := NULL;
                        SELECT n.id, n.concurrency_key, n.order_key, n.singleton_key INTO c FROM job.live_jobs n
                         WHERE n.queue = q.name AND n.state = 'waiting' AND n.concurrency_key IS NULL
                           AND n.id <> ALL (picked)
                         ORDER BY n.priority DESC, n.run_at, n.id LIMIT 1
                         FOR UPDATE SKIP LOCKED;
                        CONTINUE WHEN NOT FOUND;
                    ELSE
                        CONTINUE WHEN refused ? ('c:' || fair_key);
                        SELECT n.id, n.concurrency_key, n.order_key, n.singleton_key INTO c FROM job.live_jobs n
                         WHERE n.queue = q.name AND n.state = 'waiting' AND n.concurrency_key = fair_key
                           AND n.id <> ALL (picked)
                         ORDER BY n.priority DESC, n.run_at, n.id LIMIT 1;
                        CONTINUE WHEN NOT FOUND;
                    END IF;
                END IF;
                refusal := job._admit(q, c.id, c.concurrency_key, c.order_key, c.singleton_key, admitted);
                IF refusal IS NOT NULL THEN
                    IF refusal <> '' THEN
                        refused := refused || jsonb_build_object(refusal, true);
                    END IF;
                    CONTINUE;
                END IF;
                picked := picked || c.id;
                admitted := admitted || c.concurrency_key;
                EXIT WHEN cardinality(picked) >= wanted;
            END LOOP;
            IF NOT q.fair THEN
                CLOSE candidates;
            ELSE
                PERFORM job._move_fair_cursor(q.id, fair_key);
            END IF;
            IF key_by_key AND q.serial_keys AND cardinality(picked) < wanted THEN
                -- Each order or singleton key's oldest job, when it waits: a loose scan of each key
                -- index (one probe per key), so a job behind another key's long backlog is found.
                FOR c IN
                    WITH RECURSIVE order_keys AS (
                        (SELECT o.order_key AS key FROM job.live_jobs o
                          WHERE o.queue = q.name AND o.order_key IS NOT NULL ORDER BY o.order_key LIMIT 1)
                        UNION ALL
                        SELECT (SELECT o.order_key FROM job.live_jobs o
                                 WHERE o.queue = q.name AND o.order_key > k.key ORDER BY o.order_key LIMIT 1)
                          FROM order_keys k WHERE k.key IS NOT NULL
                    ), singleton_keys AS (
                        (SELECT o.singleton_key AS key FROM job.live_jobs o
                          WHERE o.queue = q.name AND o.singleton_key IS NOT NULL ORDER BY o.singleton_key LIMIT 1)
                        UNION ALL
                        SELECT (SELECT o.singleton_key FROM job.live_jobs o
                                 WHERE o.queue = q.name AND o.singleton_key > k.key ORDER BY o.singleton_key LIMIT 1)
                          FROM singleton_keys k WHERE k.key IS NOT NULL
                    )
                    SELECT h.id, h.concurrency_key, h.order_key, h.singleton_key
                      FROM order_keys k
                     CROSS JOIN LATERAL (SELECT o.id, o.state, o.concurrency_key, o.order_key, o.singleton_key
                                           FROM job.live_jobs o WHERE o.queue = q.name AND o.order_key = k.key
                                          ORDER BY o.id LIMIT 1) h
                     WHERE h.state = 'waiting' AND h.id <> ALL (picked)
                    UNION ALL
                    SELECT h.id, h.concurrency_key, h.order_key, h.singleton_key
                      FROM singleton_keys k
                     CROSS JOIN LATERAL (SELECT o.id, o.state, o.concurrency_key, o.order_key, o.singleton_key
                                           FROM job.live_jobs o WHERE o.queue = q.name AND o.singleton_key = k.key
                                          ORDER BY o.id LIMIT 1) h
                     WHERE h.state = 'waiting' AND h.id <> ALL (picked)
                LOOP
                    CONTINUE WHEN c.concurrency_key IS NOT NULL AND refused ? ('c:' || c.concurrency_key);
                    IF job._admit(q, c.id, c.concurrency_key, c.order_key, c.singleton_key, admitted) IS NULL THEN
                        picked := picked || c.id;
                        admitted := admitted || c.concurrency_key;
                        EXIT WHEN cardinality(picked) >= wanted;
                    END IF;
                END LOOP;
            END IF;
        END IF;
    END IF;
    IF q.concurrency IS NOT NULL AND cardinality(picked) > 0 THEN
        UPDATE job.concurrency_slots cs SET job_id = picked[array_position(slots, cs.slot)]
         WHERE cs.queue = q.name AND cs.slot = ANY (slots[1:cardinality(picked)]);
    END IF;
    IF q.rate_limit IS NOT NULL AND cardinality(picked) > 0 THEN
        PERFORM job._rate_room(q.name, '', rate.shard_limit, q.rate_period, cardinality(picked), true, rate.shard);
    END IF;
    RETURN picked;
END $$;

-- For job.next_due on a queue with limits and waiting jobs: now when one of them may start,
-- else the earliest time that may change (a window or hold ends, a lease runs out; a job
-- finishing sooner wakes LISTENers, and a poller looks again after its poll interval).
CREATE FUNCTION job._flow_next_start(q job.queues)
RETURNS timestamptz LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    queue_wake timestamptz;
BEGIN
    SELECT min(r.wake_at) INTO queue_wake FROM job.rate_windows r
     WHERE r.queue = q.name AND r.key = '' AND r.wake_at > now();
    IF queue_wake IS NULL
       AND (q.concurrency IS NULL
            OR (SELECT count(*) FROM (SELECT 1 FROM job.live_jobs l WHERE l.queue = q.name AND l.state = 'running'
                                       LIMIT q.concurrency) r) < q.concurrency)
       AND EXISTS (SELECT 1 FROM job.live_jobs n
                    WHERE n.queue = q.name AND n.state = 'waiting'
                      AND (n.order_key IS NULL
                           OR NOT EXISTS (SELECT 1 FROM job.live_jobs o
                                           WHERE o.queue = q.name AND o.order_key = n.order_key AND o.id < n.id))
                      AND (n.singleton_key IS NULL
                           OR NOT EXISTS (SELECT 1 FROM job.live_jobs o
                                           WHERE o.queue = q.name AND o.singleton_key = n.singleton_key AND o.id < n.id))
                      AND (n.concurrency_key IS NULL
                           OR ((q.key_concurrency IS NULL
                                OR (SELECT count(*) FROM job.live_jobs r
                                     WHERE r.queue = q.name AND r.concurrency_key = n.concurrency_key
                                       AND r.state = 'running' AND r.concurrency_key IS NOT NULL
                                       AND r.lease_expires_at > now()) < q.key_concurrency)
                               AND NOT EXISTS (SELECT 1 FROM job.rate_windows w
                                                WHERE w.queue = q.name AND w.key = n.concurrency_key
                                                  AND w.wake_at > now())))) THEN
        RETURN now();
    END IF;
    IF queue_wake IS NOT NULL THEN
        RETURN queue_wake;  -- nothing of the queue starts before its window or hold allows
    END IF;
    RETURN least((SELECT min(w.wake_at) FROM job.rate_windows w WHERE w.queue = q.name AND w.wake_at > now()),
                 (SELECT min(l.lease_expires_at) FROM job.live_jobs l
                   WHERE l.queue = q.name AND l.state = 'running' AND l.lease_expires_at > now()));
END $$;

-- Holds back `queue` (or, with `key`, its jobs of that concurrency key) until `until`: what
-- a worker does on a 429.  Jobs wait and start when the hold ends (the scheduler wakes the
-- queue's consumers then); running jobs go on.  A later hold replaces an earlier one, and
-- `until` NULL or past lifts it.  Audited.
CREATE FUNCTION job.rate_limit_pause(queue text, key text DEFAULT NULL, until timestamptz DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    q job.queues := job._require_queue(rate_limit_pause.queue);
BEGIN
    IF rate_limit_pause.key IS NOT NULL AND job._name_problem(rate_limit_pause.key, 512) IS NOT NULL THEN
        PERFORM job._check_name('key', rate_limit_pause.key, 512);
    END IF;
    IF rate_limit_pause.until IS NOT NULL AND NOT isfinite(rate_limit_pause.until) THEN
        RAISE EXCEPTION 'until must be a finite time, got %', rate_limit_pause.until
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF rate_limit_pause.until > now() THEN
        -- A 429's Retry-After is seconds or minutes; a hold for years stops the queue for good.
        PERFORM job._check_at_most('until - now()', rate_limit_pause.until - now(), 'pg_jobqueue.max_hold',
                                   interval '1 day');
    END IF;
    -- The work duty holds only queues it may work, and never one the background worker serves
    -- (a handler's or an endpoint's): those belong to their administrators, who hold every
    -- queue (the admin duty is the one that may pause queues).
    IF NOT has_function_privilege(job._calling_role(), 'job.pause_queue(text)', 'EXECUTE') THEN
        IF EXISTS (SELECT 1 FROM job.handler_defs h WHERE h.queue = q.name)
           OR EXISTS (SELECT 1 FROM job.endpoint_defs e WHERE e.queue = q.name) THEN
            RAISE EXCEPTION 'permission denied: queue % is served by the background worker, so only an administrator may hold it',
                quote_literal(q.name)
                USING ERRCODE = 'insufficient_privilege';
        ELSIF q.work_granted THEN
            PERFORM job._require_may(q.name, 'work');
        END IF;
    END IF;
    PERFORM job._rate_window(q.name, coalesce(rate_limit_pause.key, ''));
    UPDATE job.rate_windows r
       SET held_until = CASE WHEN rate_limit_pause.until > now() THEN rate_limit_pause.until END,
           wake_at = CASE WHEN rate_limit_pause.until > now() THEN least(r.wake_at, rate_limit_pause.until) ELSE now() END
     WHERE r.queue = q.name AND r.key = coalesce(rate_limit_pause.key, '') AND r.shard = 0;
    IF NOT q.holds THEN
        UPDATE job.queues qs SET holds = true WHERE qs.name = q.name;
    END IF;
    PERFORM job._due_on_commit(greatest(coalesce(rate_limit_pause.until, now()), now()));
    PERFORM job._audit('rate_limit_pause', jsonb_build_object('queue', q.name, 'key', rate_limit_pause.key,
                                                              'until', rate_limit_pause.until));
END $$;

COMMENT ON FUNCTION job.rate_limit_pause(text, text, timestamptz) IS 'Holds back a queue, or with key its jobs of that concurrency key, until until (NULL or a past time lifts the hold; at most pg_jobqueue.max_hold ahead); running jobs go on (audited).';

-- Wakes the consumers of queues whose rate window or hold lets jobs start again (the
-- scheduler runs this with the due jobs).  Returns how many queues.
CREATE FUNCTION job._wake_rate_limited()
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    woken text[];
BEGIN
    WITH due AS (
        UPDATE job.rate_windows r SET wake_at = NULL
         WHERE r.wake_at <= now()
        RETURNING r.queue
    )
    SELECT array_agg(DISTINCT d.queue) INTO woken FROM due d;
    PERFORM job._wake_queue_on_commit(qs.id) FROM job.queues qs
     WHERE qs.name = ANY (woken) AND NOT qs.paused;
    RETURN coalesce(cardinality(woken), 0);
END $$;

-- Deletes up to `max_rows` rows of keys' rate windows that say nothing any more: no hold, no
-- wake-up due, and no start a claim would still count (the newest is two periods old, or
-- the queue no longer limits keys' rates).  A key's row is made again by its next claim.
-- Keeps the table as small as the set of recently active keys; a row a claim holds is left
-- for the next round.  (The scheduler's maintenance runs this.)
CREATE FUNCTION job._prune_rate_windows(max_rows int)
RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pruned int;
BEGIN
    DELETE FROM job.rate_windows r
     WHERE r.ctid = ANY (ARRAY(
           SELECT w.ctid FROM job.rate_windows w
             JOIN job.queues q ON q.name = w.queue
            WHERE w.key <> '' AND (w.held_until IS NULL OR w.held_until <= now()) AND w.wake_at IS NULL
              AND (q.key_rate_period IS NULL
                   OR (w.base + cardinality(w.counts))
                      * ceil(extract(epoch FROM q.key_rate_period) * 1000 / 20)
                      < extract(epoch FROM now() - 2 * q.key_rate_period) * 1000)
            LIMIT max_rows
            FOR UPDATE OF w SKIP LOCKED));
    GET DIAGNOSTICS pruned = ROW_COUNT;
    RETURN pruned;
END $$;

-- Every queue's settings, flow control included, with its active holds.
CREATE VIEW job.queue_settings AS
SELECT q.name AS queue, q.max_retries, q.backoff_base, q.backoff_max, q.jitter, q.lease,
       q.idempotency_window, q.retention, q.max_payload_bytes, q.paused,
       q.concurrency, q.key_concurrency, q.rate_limit, q.rate_period, q.key_rate_limit, q.key_rate_period, q.fair,
       (SELECT r.held_until FROM job.rate_windows r
         WHERE r.queue = q.name AND r.key = '' AND r.shard = 0 AND r.held_until > pg_catalog.now()) AS held_until,
       (SELECT pg_catalog.count(*) FROM job.rate_windows r
         WHERE r.queue = q.name AND r.key <> '' AND r.held_until > pg_catalog.now()) AS keys_held,
       q.created_at, q.updated_at
  FROM job.queues q;

COMMENT ON VIEW job.queue_settings IS 'Every queue''s settings (retries, lease, retention, flow control) and its active holds.';

COMMENT ON COLUMN job.queue_settings.queue IS 'The queue''s name.';
COMMENT ON COLUMN job.queue_settings.max_retries IS 'Retries a job gets after its first attempt (for jobs enqueued without max_retries).';
COMMENT ON COLUMN job.queue_settings.backoff_base IS 'The delay after a job''s first failed attempt; it doubles with each further failure, up to backoff_max (jitter aside).';
COMMENT ON COLUMN job.queue_settings.backoff_max IS 'The longest retry delay, before jitter.';
COMMENT ON COLUMN job.queue_settings.jitter IS 'The random spread of each retry delay, a fraction from 0 to 1 (0.1: up to 10% shorter or longer).';
COMMENT ON COLUMN job.queue_settings.lease IS 'How long a claim holds a job unless heartbeated (dequeue may pass another).';
COMMENT ON COLUMN job.queue_settings.idempotency_window IS 'How long after an enqueue its idempotency key keeps returning the same job.';
COMMENT ON COLUMN job.queue_settings.retention IS 'How long finished jobs are kept before the background worker deletes them.';
COMMENT ON COLUMN job.queue_settings.max_payload_bytes IS 'The largest payload enqueue accepts, in bytes of stored jsonb; NULL: no limit.';
COMMENT ON COLUMN job.queue_settings.paused IS 'Whether the queue is paused: it accepts enqueues but hands out no job.';
COMMENT ON COLUMN job.queue_settings.concurrency IS 'The most jobs of the queue holding a lease at once; NULL: no limit.';
COMMENT ON COLUMN job.queue_settings.key_concurrency IS 'The most running jobs per concurrency key; NULL: no limit.';
COMMENT ON COLUMN job.queue_settings.rate_limit IS 'The most jobs started (claimed) in any window of rate_period; NULL: no limit.';
COMMENT ON COLUMN job.queue_settings.rate_period IS 'The window rate_limit counts starts in; NULL when there is no rate_limit.';
COMMENT ON COLUMN job.queue_settings.key_rate_limit IS 'The most jobs started in any window of key_rate_period, per concurrency key; NULL: no limit.';
COMMENT ON COLUMN job.queue_settings.key_rate_period IS 'The window key_rate_limit counts starts in; NULL when there is no key_rate_limit.';
COMMENT ON COLUMN job.queue_settings.fair IS 'Whether claims take jobs round-robin across concurrency keys.';
COMMENT ON COLUMN job.queue_settings.held_until IS 'When the queue''s own hold (job.rate_limit_pause without key) ends; NULL: not held.';
COMMENT ON COLUMN job.queue_settings.keys_held IS 'How many concurrency keys of the queue are held now; a count.';
COMMENT ON COLUMN job.queue_settings.created_at IS 'When the queue was created.';
COMMENT ON COLUMN job.queue_settings.updated_at IS 'When job.create_queue last set the queue, or it was last paused or resumed.';

-- Active holds (job.rate_limit_pause) of queues and keys.
CREATE VIEW job.rate_limit_holds AS
SELECT r.queue, NULLIF(r.key, '') AS key, r.held_until
  FROM job.rate_windows r
 WHERE r.held_until > pg_catalog.now();

COMMENT ON VIEW job.rate_limit_holds IS 'Queues and concurrency keys held back by job.rate_limit_pause, until when.';

COMMENT ON COLUMN job.rate_limit_holds.queue IS 'The queue held back.';
COMMENT ON COLUMN job.rate_limit_holds.key IS 'The concurrency key held back; NULL: the whole queue.';
COMMENT ON COLUMN job.rate_limit_holds.held_until IS 'When the hold ends.';
