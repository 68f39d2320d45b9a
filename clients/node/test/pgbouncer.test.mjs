// Through PgBouncer in transaction pooling mode (PGJQ_BOUNCER_URL): LISTEN never fires there,
// so the worker finds that out and polls with job.next_due; everything else works as is.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { enqueue, enqueueMany, Worker } from 'pg-jobqueue';
import { BOUNCER_URL, collectErrors, sleep, testDatabase, waitFor } from './helpers.mjs';

const skip = BOUNCER_URL ? false : 'PGJQ_BOUNCER_URL is not set';

test('through the pooler: LISTEN is found not to work, the worker polls and drains', {
  skip,
  timeout: 120_000,
}, async (t) => {
  const { bouncerUrl, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('pooled')");
  const total = 2_000;
  await enqueueMany(
    db,
    'pooled',
    Array.from({ length: total }, (_, n) => ({ n })),
  );
  const runs = new Map();
  const handler = async (job) => {
    runs.set(job.id, (runs.get(job.id) ?? 0) + 1);
    return { n: job.payload.n };
  };
  const workers = Array.from(
    { length: 4 },
    (_, i) =>
      new Worker('pooled', handler, {
        connection: bouncerUrl,
        concurrency: 4,
        listenProbeTimeout: 1_000,
        pollInterval: 1_000,
        name: `pooled-${i}`,
      }),
  );
  const errors = [];
  for (const w of workers) w.on('error', (e) => errors.push(e));
  onCleanup(() => Promise.all(workers.map((w) => w.close())));
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  assert.ok(
    workers.every((w) => !w.listening),
    'LISTEN through a transaction pooler is detected as deaf',
  );
  assert.ok(errors.length === 4 && errors.every((e) => /heard nothing/.test(e.message)), 'and reported');
  errors.length = 0;

  await waitFor(() => workers.reduce((s, w) => s + w.stats.completed, 0) >= total, {
    ms: 90_000,
    what: `${total} completions`,
  });
  // A delayed job: the idle pollers sleep until job.next_due says it is due.
  const delayed = await enqueue(db, 'pooled', { late: true }, { delay: 1_500 });
  await waitFor(() => runs.has(delayed), { what: 'the delayed job' });
  await Promise.all(workers.map((w) => w.close()));

  const { rows } = await db.query(
    "SELECT count(*)::int AS n, count(DISTINCT id)::int AS d, count(*) FILTER (WHERE attempt <> 1)::int AS retried FROM job.jobs WHERE queue = 'pooled' AND state = 'completed'",
  );
  assert.deepEqual(rows[0], { n: total + 1, d: total + 1, retried: 0 });
  assert.ok([...runs.values()].every((n) => n === 1));
  const late = await db.query(
    'SELECT extract(epoch FROM claimed_at - run_at) * 1000 AS ms FROM job.jobs WHERE id = $1::bigint',
    [delayed],
  );
  t.diagnostic(`polling picked up the delayed job ${Number(late.rows[0].ms).toFixed(1)} ms after due`);
  assert.ok(Number(late.rows[0].ms) < 500, 'next_due, not the poll interval, set the sleep');
  assert.deepEqual(errors, []);
});

test('through the pooler with a direct LISTEN connection: wake-ups arrive', { skip, timeout: 60_000 }, async (t) => {
  const { url, bouncerUrl, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('mixed')");
  const started = [];
  const worker = new Worker('mixed', async (job) => started.push([job.id, Date.now()]), {
    connection: bouncerUrl,
    listen: url,
    pollInterval: 60_000,
  });
  const errors = collectErrors(worker);
  onCleanup(() => worker.close());
  await worker.waitUntilReady();
  assert.equal(worker.listening, true);
  await sleep(200);
  const t0 = Date.now();
  await enqueue(db, 'mixed', {});
  await waitFor(() => started.length === 1, { what: 'the job' });
  assert.ok(started[0][1] - t0 < 1_000, `picked up after ${started[0][1] - t0} ms`);
  await worker.close();
  assert.deepEqual(errors, []);
});

test("through the pooler: enqueue in the application's transaction", { skip, timeout: 60_000 }, async (t) => {
  const { bouncerUrl, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('txn')");
  const pool = new pg.Pool({ connectionString: bouncerUrl, max: 4 });
  onCleanup(() => pool.end());
  const c = await pool.connect();
  let committed;
  try {
    await c.query('BEGIN');
    await enqueue(c, 'txn', { n: 1 });
    await enqueueMany(c, 'txn', [{ n: 2 }, { n: 3 }]);
    await c.query('ROLLBACK');
    await c.query('BEGIN');
    committed = await enqueue(c, 'txn', { n: 4 }, { priority: 2 });
    await c.query('COMMIT');
  } finally {
    c.release();
  }
  const { rows } = await db.query("SELECT id::text AS job_id, payload FROM job.jobs WHERE queue = 'txn'");
  assert.deepEqual(rows, [{ job_id: committed, payload: { n: 4 } }]);

  const done = [];
  const worker = new Worker('txn', async (job) => done.push(job.payload.n), { connection: pool, listen: false });
  const errors = collectErrors(worker);
  onCleanup(() => worker.close());
  await waitFor(() => done.length === 1, { what: 'the committed job' });
  await worker.close();
  assert.deepEqual(done, [4]);
  assert.equal(pool.ended, false, 'a pool passed in is not ended by close()');
  assert.deepEqual(errors, []);
});
