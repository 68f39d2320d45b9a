import assert from 'node:assert/strict';
import { test } from 'node:test';
import { enqueue, Worker } from 'pg-jobqueue';
import { collectErrors, sleep, testDatabase, waitFor } from './helpers.mjs';

// A worker of a queue that does not exist used to fail every claim, emitting an error each
// time and filling the server's log, forever.  It stops at start now, with one clear error.
test('a worker of a queue that does not exist stops at start with one error', async (t) => {
  const { url, onCleanup } = await testDatabase(t);
  const worker = new Worker('nope', async () => 'never', { connection: url, pollInterval: 100 });
  onCleanup(() => worker.close());
  const errors = collectErrors(worker);
  // (Not events.once: it rejects on the error event this test expects.)
  const closed = new Promise((resolve) => worker.once('closed', resolve));
  await assert.rejects(worker.waitUntilReady(), (err) => {
    assert.match(err.message, /^queue 'nope' does not exist: the worker stops/);
    assert.equal(err.cause?.code, '42704');
    return true;
  });
  await closed;
  assert.equal(worker.closed, true);
  await sleep(1_500);
  assert.deepEqual(
    errors.map((e) => e.message),
    [
      "queue 'nope' does not exist: the worker stops (create it with job.create_queue, or pass waitForQueue: true to wait for it)",
    ],
  );
});

test('with waitForQueue a worker waits for its queue, then works it', async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  const done = [];
  const worker = new Worker('later', async (job) => job.payload.n, { connection: url, waitForQueue: true });
  onCleanup(() => worker.close());
  const errors = collectErrors(worker);
  worker.on('completed', (job) => done.push(job.id));
  await sleep(1_000);
  assert.equal(worker.closed, false);
  // Said once that it waits, not at every look.
  assert.equal(errors.length, 1, errors.map((e) => e.message).join('; '));
  assert.match(errors[0].message, /queue 'later' does not exist/);
  await db.query("SELECT job.create_queue('later')");
  const id = await enqueue(db, 'later', { n: 1 });
  await worker.waitUntilReady();
  await waitFor(() => done.includes(id), { ms: 40_000, what: 'the job to complete' });
  assert.equal(errors.length, 1);
});

test('waitForQueue must be a boolean', () => {
  assert.throws(
    () => new Worker('q', async () => null, { connection: 'postgres://x', waitForQueue: 'yes', autorun: false }),
    /waitForQueue must be a boolean/,
  );
});
