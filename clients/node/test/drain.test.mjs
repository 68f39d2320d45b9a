import assert from 'node:assert/strict';
import { test } from 'node:test';
import { enqueueMany, Worker } from 'pg-jobqueue';
import { collectErrors, testDatabase, waitFor } from './helpers.mjs';

test('8 workers with concurrency 4 drain 20,000 jobs, each exactly once', { timeout: 120_000 }, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  const queue = 'drain';
  const total = 20_000;
  await db.query("SELECT job.create_queue('drain')");
  for (let start = 0; start < total; start += 5_000) {
    const payloads = Array.from({ length: 5_000 }, (_, i) => ({ n: start + i }));
    await enqueueMany(db, queue, payloads);
  }

  const seen = new Map(); // id -> handler runs
  let completed = 0;
  const workers = [];
  const errors = [];
  const t0 = performance.now();
  for (let w = 0; w < 8; w++) {
    const worker = new Worker(
      queue,
      async (job) => {
        seen.set(job.id, (seen.get(job.id) ?? 0) + 1);
        return { n: job.payload.n };
      },
      { connection: url, concurrency: 4, name: `drain-${w}` },
    );
    errors.push(collectErrors(worker));
    worker.on('completed', () => completed++);
    workers.push(worker);
  }
  onCleanup(() => Promise.all(workers.map((w) => w.close())));

  await waitFor(() => completed >= total, { ms: 100_000, every: 50, what: `${total} completions` });
  const seconds = (performance.now() - t0) / 1000;
  await Promise.all(workers.map((w) => w.close()));
  t.diagnostic(`${total} jobs in ${seconds.toFixed(1)} s: ${Math.round(total / seconds)} jobs/s`);

  assert.equal(completed, total);
  assert.equal(seen.size, total, 'every job ran');
  assert.ok(
    [...seen.values()].every((n) => n === 1),
    'no job ran twice',
  );
  const { rows } = await db.query(
    "SELECT count(*)::int AS n, count(DISTINCT id)::int AS distinct_ids, count(*) FILTER (WHERE attempt <> 1)::int AS retried, count(*) FILTER (WHERE (result ->> 'n')::int IS NULL)::int AS no_result FROM job.jobs WHERE queue = $1 AND state = 'completed'",
    [queue],
  );
  assert.deepEqual(rows[0], { n: total, distinct_ids: total, retried: 0, no_result: 0 });
  const left = await db.query("SELECT count(*)::int AS n FROM job.jobs WHERE queue = $1 AND state <> 'completed'", [
    queue,
  ]);
  assert.equal(left.rows[0].n, 0);
  const stats = workers.map((w) => w.stats);
  assert.equal(
    stats.reduce((s, x) => s + x.completed, 0),
    total,
  );
  assert.equal(
    stats.reduce((s, x) => s + x.lost + x.failed, 0),
    0,
  );
  assert.deepEqual(errors.flat(), []);
});
