-- Benchmark database objects, run once per `make bench` in a fresh database `bench`.
-- The extension and, beside it in the same database, the plain-SQL baseline queue:
-- one table, an index on (queue, run_at, id); claim by UPDATE ... RETURNING over a
-- FOR UPDATE SKIP LOCKED subquery (a claimed row's future run_at is its lease); acknowledge
-- by DELETE.

CREATE EXTENSION pg_jobqueue;
SELECT job.create_queue('bench');

CREATE TABLE baseline_jobs (
    id       bigserial PRIMARY KEY,
    queue    text NOT NULL,
    payload  jsonb NOT NULL,
    run_at   timestamptz NOT NULL DEFAULT now(),
    attempts int NOT NULL DEFAULT 0
);
CREATE INDEX ON baseline_jobs (queue, run_at, id);

-- Both sides start every measured run from empty tables (restarted id sequences too).
CREATE PROCEDURE bench_reset() LANGUAGE sql AS $$
    TRUNCATE job.live_jobs, job.finished_jobs, job.idempotency_keys, baseline_jobs RESTART IDENTITY;
    SELECT setval('job.job_id_seq', 1, false);
$$;

-- Backlogs: the same payloads on both sides, `chunk` jobs per transaction.
CREATE PROCEDURE bench_load_jobqueue(total int, chunk int DEFAULT 50000) LANGUAGE plpgsql AS $$
DECLARE
    done int := 0;
    n int;
BEGIN
    WHILE done < total LOOP
        n := least(chunk, total - done);
        PERFORM count(*) FROM job.enqueue_many('bench',
            ARRAY(SELECT jsonb_build_object('task', 'send_email', 'user_id', g)
                    FROM generate_series(done + 1, done + n) g));
        done := done + n;
        COMMIT;
    END LOOP;
END $$;

CREATE PROCEDURE bench_load_baseline(total int, chunk int DEFAULT 50000) LANGUAGE plpgsql AS $$
DECLARE
    done int := 0;
    n int;
BEGIN
    WHILE done < total LOOP
        n := least(chunk, total - done);
        INSERT INTO baseline_jobs (queue, payload)
        SELECT 'bench', jsonb_build_object('task', 'send_email', 'user_id', g)
          FROM generate_series(done + 1, done + n) g;
        done := done + n;
        COMMIT;
    END LOOP;
END $$;

-- Where a side's jobs are, for the checks around each run.
--   ready:   can be claimed now;  claimed: claimed and not acknowledged;  done: acknowledged.
-- The baseline deletes what it acknowledges, so its `done` is not counted here.
CREATE FUNCTION bench_counts(side text, OUT ready bigint, OUT claimed bigint, OUT done bigint)
LANGUAGE plpgsql AS $$
BEGIN
    IF side = 'jobqueue' THEN
        SELECT count(*) FILTER (WHERE state = 'waiting'), count(*) FILTER (WHERE state = 'running')
          INTO ready, claimed FROM job.live_jobs WHERE queue = 'bench';
        SELECT count(*) INTO done FROM job.finished_jobs WHERE queue = 'bench' AND state = 'completed';
    ELSE
        SELECT count(*) FILTER (WHERE run_at <= now()), count(*) FILTER (WHERE run_at > now())
          INTO ready, claimed FROM baseline_jobs WHERE queue = 'bench';
        done := NULL;
    END IF;
END $$;
