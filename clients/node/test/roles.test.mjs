// The library needs no more than the main README's "Work" and "Produce" recipes.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import pg from 'pg';
import { enqueue, enqueueMany, Worker } from 'pg-jobqueue';
import { collectErrors, TEST_URL, testDatabase, waitFor } from './helpers.mjs';

function as(url, role) {
  const u = new URL(url);
  u.username = role;
  u.password = '';
  return u.toString();
}

test('a worker with the Work grants and a producer with the Produce grants', { timeout: 60_000 }, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  const suffix = randomBytes(3).toString('hex');
  const worker = `pgjq_worker_${suffix}`;
  const producer = `pgjq_producer_${suffix}`;
  await db.query(`CREATE ROLE ${worker} LOGIN; CREATE ROLE ${producer} LOGIN`);
  t.after(async () => {
    // After the database is dropped (hooks run in order), the roles own nothing anywhere.
    const a = new pg.Client(TEST_URL);
    await a.connect();
    await a.query(`DROP ROLE IF EXISTS ${worker}; DROP ROLE IF EXISTS ${producer}`);
    await a.end();
  });
  await db.query(`
    GRANT USAGE ON SCHEMA job TO ${producer};
    GRANT EXECUTE ON FUNCTION job.enqueue, job.enqueue_many TO ${producer};
    GRANT USAGE ON SCHEMA job TO ${worker};
    GRANT EXECUTE ON FUNCTION job.dequeue, job.complete, job.complete_many, job.fail, job.heartbeat,
        job.heartbeat_many, job.release, job.next_due, job.queue_id TO ${worker};
    SELECT job.create_queue('granted', max_retries => 0);
  `);

  const p = new pg.Client(as(url, producer));
  await p.connect();
  onCleanup(() => p.end());
  const ids = [
    await enqueue(p, 'granted', { kind: 'ok' }, { delay: 300 }),
    ...(await enqueueMany(p, 'granted', [{ kind: 'bare' }, { kind: 'bare' }, { kind: 'fail' }, { kind: 'long' }])),
  ];
  await assert.rejects(p.query("SELECT * FROM job.dequeue('granted')"), { code: '42501' });

  const outcomes = new Map();
  const w = new Worker(
    'granted',
    async (job) => {
      if (job.payload.kind === 'fail') throw Object.assign(new Error('nope'), { status: 500 });
      if (job.payload.kind === 'long') await new Promise((r) => setTimeout(r, 1_500));
      return job.payload.kind === 'bare' ? undefined : { ok: true };
    },
    { connection: as(url, worker), concurrency: 5, lease: 1_000 },
  );
  const errors = collectErrors(w);
  onCleanup(() => w.close());
  w.on('completed', (job) => outcomes.set(job.id, 'completed'));
  w.on('failed', (job, _e, state) => outcomes.set(job.id, state));
  w.on('lost', (job) => outcomes.set(job.id, 'lost'));
  await w.waitUntilReady();
  assert.equal(w.listening, true, 'LISTEN and its check (pg_notify) need no grant');
  await waitFor(() => outcomes.size === 5, { what: 'five outcomes' });
  await w.close();
  assert.deepEqual(
    ids.map((id) => outcomes.get(id)),
    ['completed', 'completed', 'completed', 'dead', 'completed'],
  );
  assert.deepEqual(errors, []);
});
