import assert from 'node:assert/strict';
import { test } from 'node:test';
import { enqueue, Worker } from 'pg-jobqueue';
import { collectErrors, sleep, testDatabase, waitFor } from './helpers.mjs';

// How late (ms) each completed job of `queue` was claimed after it became due.
async function lateness(db, queue) {
  const { rows } = await db.query(
    `SELECT id::text AS job_id, attempt, extract(epoch FROM claimed_at - run_at) * 1000 AS late_ms
       FROM job.jobs WHERE queue = $1 AND state = 'completed' ORDER BY id`,
    [queue],
  );
  return rows.map((r) => ({ ...r, late_ms: Number(r.late_ms) }));
}

test('delayed jobs and retries are picked up within 100 ms of becoming due (LISTEN)', {
  timeout: 60_000,
}, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('later', max_retries => 3, backoff_base => '700 milliseconds', jitter => 0)");
  const worker = new Worker(
    'later',
    async (job) => {
      if (job.payload.fail && job.attempt === 1) throw new Error('transient');
      return { attempt: job.attempt };
    },
    { connection: url, concurrency: 2 },
  );
  const errors = collectErrors(worker);
  onCleanup(() => worker.close());
  await worker.waitUntilReady();
  assert.equal(worker.listening, true, 'LISTEN works on a direct connection');
  let done = 0;
  worker.on('completed', () => done++);
  await sleep(200); // the worker is idle, waiting on LISTEN
  // Delays spread out, some enqueued while the worker already sleeps; retries come due by
  // their backoff (700 ms).
  await enqueue(db, 'later', { n: 1 }, { delay: 800 });
  await enqueue(db, 'later', { n: 2 }, { delay: '1.3 seconds' });
  await enqueue(db, 'later', { n: 3, fail: true });
  await sleep(400);
  await enqueue(db, 'later', { n: 4 }, { runAt: new Date(Date.now() + 900) });
  await enqueue(db, 'later', { n: 5, fail: true }, { delay: 500 });
  await waitFor(() => done === 5, { what: 'five completions' });
  await worker.close();
  const late = await lateness(db, 'later');
  t.diagnostic(`claimed after due (ms): ${late.map((r) => r.late_ms.toFixed(1)).join(', ')}`);
  assert.equal(late.length, 5);
  assert.deepEqual(
    late.map((r) => r.attempt),
    [1, 1, 2, 1, 2],
  );
  for (const r of late) {
    assert.ok(
      r.late_ms >= 0 && r.late_ms < 100,
      `job ${r.job_id} (attempt ${r.attempt}) claimed ${r.late_ms} ms after due`,
    );
  }
  assert.deepEqual(errors, []);
});

test('an idle worker hears an enqueue at once, and a paused queue wakes it on resume', {
  timeout: 60_000,
}, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('ping')");
  const started = [];
  // A long poll interval: only a notification can wake it quickly.
  const worker = new Worker('ping', async (job) => started.push([job.id, Date.now()]), {
    connection: url,
    pollInterval: 60_000,
    maxListenWait: 60_000,
  });
  const errors = collectErrors(worker);
  onCleanup(() => worker.close());
  await worker.waitUntilReady();
  assert.equal(worker.listening, true);
  await sleep(200);
  let t0 = Date.now();
  await enqueue(db, 'ping', {});
  await waitFor(() => started.length === 1, { what: 'the first job' });
  assert.ok(started[0][1] - t0 < 1_000, `picked up after ${started[0][1] - t0} ms`);

  await db.query("SELECT job.pause_queue('ping')");
  await enqueue(db, 'ping', {});
  await sleep(300);
  assert.equal(started.length, 1, 'a paused queue hands out nothing');
  t0 = Date.now();
  await db.query("SELECT job.resume_queue('ping')");
  await waitFor(() => started.length === 2, { what: 'the job after resume' });
  assert.ok(started[1][1] - t0 < 1_000, `picked up ${started[1][1] - t0} ms after resume`);
  await worker.close();
  assert.deepEqual(errors, []);
});
