import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { enqueueMany, Worker, WorkerClosingError } from 'pg-jobqueue';
import { collectErrors, sleep, testDatabase, waitFor } from './helpers.mjs';

async function states(db, queue) {
  const { rows } = await db.query(
    `SELECT count(*) FILTER (WHERE state = 'completed')::int AS completed,
            count(DISTINCT id) FILTER (WHERE state = 'completed')::int AS completed_distinct,
            count(*) FILTER (WHERE state = 'waiting' AND attempt = 0)::int AS waiting_unstarted,
            count(*) FILTER (WHERE state NOT IN ('completed', 'waiting') OR (state = 'waiting' AND attempt <> 0))::int AS other,
            count(*) FILTER (WHERE errors <> '[]')::int AS with_errors,
            count(*)::int AS total
       FROM job.jobs WHERE queue = $1`,
    [queue],
  );
  return rows[0];
}

test('close() during load hands back what it has not started and loses nothing', { timeout: 120_000 }, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  const queue = 'busy';
  const total = 3_000;
  await db.query("SELECT job.create_queue('busy')");
  await enqueueMany(
    db,
    queue,
    Array.from({ length: total }, (_, n) => ({ n })),
  );
  const runs = new Map();
  const handler = async (job) => {
    runs.set(job.id, (runs.get(job.id) ?? 0) + 1);
    await sleep(1 + Math.random() * 4);
    return { n: job.payload.n };
  };
  const completions = () => workers.reduce((s, w) => s + w.stats.completed, 0);
  const workers = Array.from(
    { length: 6 },
    (_, i) => new Worker(queue, handler, { connection: url, concurrency: 4, name: `first-${i}` }),
  );
  const errors = workers.flatMap((w) => collectErrors(w));
  onCleanup(() => Promise.all(workers.map((w) => w.close())));
  await waitFor(() => completions() >= 800, { what: '800 completions' });
  await Promise.all(workers.map((w) => w.close({ gracePeriod: 10_000 })));

  const afterClose = await states(db, queue);
  const first = workers.reduce(
    (s, w) => ({ completed: s.completed + w.stats.completed, released: s.released + w.stats.released }),
    { completed: 0, released: 0 },
  );
  t.diagnostic(`closed after ${first.completed} completions; ${first.released} claimed jobs handed back`);
  assert.equal(afterClose.other, 0, 'nothing running, failed or spent');
  assert.equal(afterClose.with_errors, 0);
  assert.equal(afterClose.completed, first.completed);
  assert.equal(afterClose.completed + afterClose.waiting_unstarted, total);
  assert.ok(workers.every((w) => w.running === 0));

  const second = new Worker(queue, handler, { connection: url, concurrency: 8, name: 'second' });
  errors.push(...collectErrors(second));
  onCleanup(() => second.close());
  await waitFor(() => first.completed + second.stats.completed >= total, { ms: 60_000, what: 'the rest' });
  await second.close();
  const end = await states(db, queue);
  assert.deepEqual(end, {
    completed: total,
    completed_distinct: total,
    waiting_unstarted: 0,
    other: 0,
    with_errors: 0,
    total,
  });
  assert.equal(runs.size, total);
  assert.ok(
    [...runs.values()].every((n) => n === 1),
    'no handler ran twice',
  );
  assert.deepEqual(errors, []);
});

test('jobs claimed by a dequeue in flight when close() is called are released unstarted', {
  timeout: 60_000,
}, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('late')");
  await enqueueMany(db, 'late', [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }]);
  // Hold the claim back: a dequeue's UPDATE waits for this lock.
  const locker = new pg.Client(url);
  await locker.connect();
  onCleanup(() => locker.end());
  await locker.query('BEGIN');
  await locker.query('LOCK TABLE job.live_jobs IN EXCLUSIVE MODE');
  const started = [];
  const released = [];
  const worker = new Worker('late', async (job) => started.push(job.id), {
    connection: url,
    concurrency: 4,
    listen: false,
    name: 'late-worker',
  });
  const errors = collectErrors(worker);
  onCleanup(() => worker.close());
  worker.on('released', (job) => released.push(job));
  await waitFor(
    async () =>
      (
        await db.query(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%job.dequeue%'",
        )
      ).rows[0].n === 1,
    { what: 'the dequeue to wait for the lock' },
  );
  const closing = worker.close({ gracePeriod: 5_000 });
  await locker.query('COMMIT');
  await closing;

  assert.deepEqual(started, []);
  assert.equal(released.length, 4);
  assert.equal(worker.stats.released, 4);
  assert.ok(released.every((job) => job.attempt === 1 && typeof job.token === 'string'));
  const { rows } = await db.query(
    "SELECT state, attempt, claimed_by, errors FROM job.jobs WHERE queue = 'late' ORDER BY id",
  );
  assert.deepEqual(
    rows,
    Array.from({ length: 4 }, () => ({ state: 'waiting', attempt: 0, claimed_by: null, errors: [] })),
  );
  assert.deepEqual(errors, []);
});

test('handlers still running after the grace period are aborted and their attempt recorded as failed', {
  timeout: 60_000,
}, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('stuck', max_retries => 3)");
  await enqueueMany(db, 'stuck', [{ n: 1 }, { n: 2 }]);
  const reasons = [];
  const failed = [];
  const worker = new Worker(
    'stuck',
    (job) =>
      new Promise((resolve) => {
        // Ignores nothing: resolves once aborted (a well-behaved handler), but too late.
        job.signal.addEventListener('abort', () => {
          reasons.push(job.signal.reason);
          setTimeout(() => resolve({ late: true }), 50);
        });
      }),
    { connection: url, concurrency: 2 },
  );
  const errors = collectErrors(worker);
  onCleanup(() => worker.close());
  worker.on('failed', (job, err, state) => failed.push([job.attempt, err.name, state]));
  await waitFor(() => worker.running === 2, { what: 'both jobs to start' });
  const t0 = Date.now();
  await worker.close({ gracePeriod: 300 });
  assert.ok(Date.now() - t0 < 5_000);
  assert.equal(reasons.length, 2);
  assert.ok(reasons.every((r) => r instanceof WorkerClosingError));
  assert.deepEqual(failed, [
    [1, 'WorkerClosingError', 'scheduled'],
    [1, 'WorkerClosingError', 'scheduled'],
  ]);
  await sleep(200); // the late handlers' results are not recorded
  const { rows } = await db.query(
    "SELECT state, attempt, result, errors -> 0 ->> 'error' AS error FROM job.jobs WHERE queue = 'stuck'",
  );
  for (const row of rows) {
    assert.equal(row.state, 'scheduled');
    assert.equal(row.attempt, 1);
    assert.equal(row.result, null);
    assert.match(row.error, /closed before the handler finished/);
  }
  assert.deepEqual(errors, []);
});
