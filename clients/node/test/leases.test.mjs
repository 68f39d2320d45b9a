import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { enqueue, enqueueMany, LeaseLostError, Worker } from 'pg-jobqueue';
import { collectErrors, sleep, testDatabase, waitFor } from './helpers.mjs';

const PSQL = process.env.PGJQ_PSQL ?? 'psql';

test('a handler longer than its lease keeps the job through automatic renewal', { timeout: 60_000 }, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('long')");
  const id = await enqueue(db, 'long', {});
  const lost = [];
  let renewedTo = null;
  const worker = new Worker(
    'long',
    async (job) => {
      const first = job.leaseExpiresAt.getTime();
      await sleep(3_000);
      renewedTo = job.leaseExpiresAt.getTime() - first;
      assert.equal(job.signal.aborted, false);
      return { slept: 3000 };
    },
    { connection: url, lease: 1_000 },
  );
  const errors = collectErrors(worker);
  onCleanup(() => worker.close());
  worker.on('lost', (job, reason) => lost.push([job.id, reason]));
  const completed = new Promise((resolve) => worker.on('completed', resolve));
  await completed;
  await worker.close();
  const { rows } = await db.query('SELECT state, attempt, errors, result FROM job.jobs WHERE id = $1::bigint', [id]);
  assert.deepEqual(rows[0], { state: 'completed', attempt: 1, errors: [], result: { slept: 3000 } });
  assert.deepEqual(lost, []);
  assert.ok(renewedTo >= 1_500, `the lease moved on by ${renewedTo} ms while the handler ran`);
  assert.deepEqual(errors, []);
});

test('a worker whose lease was taken over while its event loop was blocked cannot complete the job', {
  timeout: 60_000,
}, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('stall', max_retries => 5)");
  const id = await enqueue(db, 'stall', {});
  const psql = (sql) =>
    execFileSync(PSQL, ['-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', url, '-c', sql], { encoding: 'utf8' }).trim();
  const lost = [];
  const completedBy = [];
  const blocker = new Int32Array(new SharedArrayBuffer(4));
  const handler = (who) => async (job) => {
    if (job.attempt === 1) {
      // Block the event loop (no heartbeat can run) past the 500 ms lease, until the job was
      // taken back: by the background worker within milliseconds, or by rescue_stalled here.
      const deadline = Date.now() + 20_000;
      Atomics.wait(blocker, 0, 0, 700);
      while (psql(`SELECT state FROM job.jobs WHERE id = ${id}`) === 'running' && Date.now() < deadline) {
        psql("SELECT job.rescue_stalled('stall')");
        Atomics.wait(blocker, 0, 0, 50);
      }
    }
    return { who, attempt: job.attempt };
  };
  const a = new Worker('stall', handler('a'), { connection: url, lease: 500, name: 'worker-a' });
  const b = new Worker('stall', handler('b'), { connection: url, lease: 500, name: 'worker-b' });
  const errors = [...collectErrors(a), ...collectErrors(b)];
  onCleanup(() => Promise.all([a.close(), b.close()]));
  for (const w of [a, b]) {
    w.on('lost', (job, reason) => lost.push([w.name, job.attempt, reason, job.signal.reason]));
    w.on('completed', (job) => completedBy.push([w.name, job.attempt]));
  }
  await waitFor(() => completedBy.length === 1 && lost.length === 1, { what: 'one completion and one lost job' });
  await sleep(300); // nothing else turns up
  await Promise.all([a.close(), b.close()]);

  assert.equal(lost.length, 1);
  assert.equal(lost[0][1], 1, 'attempt 1 was lost');
  assert.ok(['complete', 'heartbeat'].includes(lost[0][2]));
  assert.ok(lost[0][3] instanceof LeaseLostError, 'its signal was aborted');
  assert.deepEqual(
    completedBy.map(([, attempt]) => attempt),
    [2],
  );
  const { rows } = await db.query(
    "SELECT state, attempt, result, errors -> 0 ->> 'error' AS first_error FROM job.jobs WHERE id = $1::bigint",
    [id],
  );
  assert.equal(rows[0].state, 'completed');
  assert.equal(rows[0].attempt, 2);
  assert.equal(rows[0].result.attempt, 2, "the result is the second attempt's");
  assert.match(rows[0].first_error, /lease expired/);
  assert.equal(a.stats.completed + b.stats.completed, 1);
  assert.deepEqual(errors, []);
});

test('without heartbeats, a handler that sleeps past its lease is refused at completion and reported lost', {
  timeout: 60_000,
}, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('slow', max_retries => 5)");
  const id = await enqueue(db, 'slow', {});
  const lost = [];
  let secondDone;
  const second = new Promise((r) => {
    secondDone = r;
  });
  const slow = new Worker(
    'slow',
    async (job) => {
      await second; // the job is taken back and completed elsewhere meanwhile
      return { by: 'slow', attempt: job.attempt };
    },
    { connection: url, lease: 500, heartbeat: false, name: 'slow' },
  );
  const errors = collectErrors(slow);
  onCleanup(() => slow.close());
  slow.on('lost', (job, reason) => lost.push([job.attempt, reason]));
  await waitFor(() => slow.running === 1, { what: 'the slow worker to claim' });
  const fast = new Worker('slow', async (job) => ({ by: 'fast', attempt: job.attempt }), {
    connection: url,
    name: 'fast',
  });
  errors.push(...collectErrors(fast));
  onCleanup(() => fast.close());
  fast.on('completed', () => secondDone());
  await waitFor(() => lost.length === 1, { what: 'the slow worker to report the job lost' });
  await Promise.all([slow.close(), fast.close()]);
  assert.deepEqual(lost, [[1, 'complete']]);
  assert.equal(slow.stats.completed, 0);
  const { rows } = await db.query('SELECT state, attempt, result FROM job.jobs WHERE id = $1::bigint', [id]);
  assert.deepEqual(rows[0], { state: 'completed', attempt: 2, result: { by: 'fast', attempt: 2 } });
  assert.deepEqual(errors, []);
});

test('a batch of completions where one job was cancelled completes the others and reports that one lost', {
  timeout: 60_000,
}, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('batch')");
  const ids = await enqueueMany(db, 'batch', [{ n: 1 }, { n: 2 }, { n: 3 }]);
  let go;
  const gate = new Promise((r) => {
    go = r;
  });
  const worker = new Worker(
    'batch',
    async () => {
      await gate; // all three return in the same turn: one completion statement
    },
    { connection: url, concurrency: 3, listen: false },
  );
  const errors = collectErrors(worker);
  onCleanup(() => worker.close());
  const lost = [];
  const completed = [];
  worker.on('lost', (job, reason) => lost.push([job.id, reason]));
  worker.on('completed', (job) => completed.push(job.id));
  await waitFor(() => worker.running === 3, { what: 'three running handlers' });
  await db.query('SELECT job.cancel($1::bigint)', [ids[1]]);
  go();
  await waitFor(() => completed.length + lost.length === 3, { what: 'three outcomes' });
  await worker.close();
  assert.deepEqual(completed.sort(), [ids[0], ids[2]].sort());
  assert.deepEqual(lost, [[ids[1], 'complete']]);
  const { rows } = await db.query("SELECT id::text AS job_id, state FROM job.jobs WHERE queue = 'batch' ORDER BY id");
  assert.deepEqual(
    rows.map((r) => r.state),
    ['completed', 'cancelled', 'completed'],
  );
  assert.deepEqual(errors, []);
});

test("a lost claim's completion, batched with another claim's job, does not complete the job it lost", {
  timeout: 60_000,
}, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('twice', max_retries => 5)");
  const x = await enqueue(db, 'twice', { name: 'x' });
  let openFirst;
  let openSecond;
  const first = new Promise((r) => {
    openFirst = r;
  });
  const second = new Promise((r) => {
    openSecond = r;
  });
  const worker = new Worker(
    'twice',
    async (job) => {
      // Attempt 1 of x and job z finish together; attempt 2 of x later.
      await (job.payload.name === 'x' && job.attempt === 2 ? second : first);
    },
    { connection: url, concurrency: 3, lease: 400, heartbeat: false },
  );
  const errors = collectErrors(worker);
  onCleanup(() => worker.close());
  const outcomes = [];
  worker.on('completed', (job) => outcomes.push([job.payload.name, job.attempt, 'completed']));
  worker.on('lost', (job, reason) => outcomes.push([job.payload.name, job.attempt, `lost (${reason})`]));
  await waitFor(() => worker.running === 1, { what: 'x claimed' });
  // While paused, z waits and x's lease runs out; on resume one dequeue claims both.
  await db.query("SELECT job.pause_queue('twice')");
  const z = await enqueue(db, 'twice', { name: 'z' });
  await waitFor(
    async () =>
      (await db.query('SELECT state FROM job.jobs WHERE id = $1::bigint', [x])).rows[0].state !== 'running' ||
      (await db.query("SELECT job.rescue_stalled('twice')")) === null,
    { what: 'x taken back' },
  );
  await db.query("SELECT job.resume_queue('twice')");
  await waitFor(() => worker.running === 3, { what: 'x again and z claimed' });
  const claims = await db.query(
    "SELECT count(DISTINCT lease_token)::int AS n FROM job.live_jobs WHERE queue = 'twice' AND state = 'running'",
  );
  assert.equal(claims.rows[0].n, 1, 'x and z share one claim');
  openFirst();
  await waitFor(() => outcomes.length === 2, { what: 'the first two outcomes' });
  openSecond();
  await waitFor(() => outcomes.length === 3, { what: 'the third outcome' });
  await worker.close();
  assert.deepEqual(outcomes.sort(), [
    ['x', 1, 'lost (complete)'],
    ['x', 2, 'completed'],
    ['z', 1, 'completed'],
  ]);
  const { rows } = await db.query(
    'SELECT id::text AS job_id, state, attempt FROM job.jobs WHERE id = ANY($1::bigint[]) ORDER BY id',
    [[x, z]],
  );
  assert.deepEqual(rows, [
    { job_id: x, state: 'completed', attempt: 2 },
    { job_id: z, state: 'completed', attempt: 1 },
  ]);
  assert.deepEqual(errors, []);
});
