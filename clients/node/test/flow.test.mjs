// Flow-control options of enqueue / enqueueMany (concurrency, order, singleton and debounce
// keys) and rateLimitPause, against the extension's claims.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { enqueue, enqueueMany, rateLimitPause } from 'pg-jobqueue';
import { testDatabase } from './helpers.mjs';

/** The ids one `job.dequeue` of `batch` hands out, in id order. */
async function claim(db, queue, batch) {
  const { rows } = await db.query("SELECT id::text AS id FROM job.dequeue($1, 'test', $2) ORDER BY id", [queue, batch]);
  return rows.map((r) => r.id);
}

const inAMinute = () => new Date(Date.now() + 60_000);

test('concurrency and order keys: one job per key at a time', async (t) => {
  const { db } = await testDatabase(t);
  await db.query("SELECT job.create_queue('keyed', key_concurrency => 1)");
  const a1 = await enqueue(db, 'keyed', { n: 1 }, { concurrencyKey: 'a' });
  const a2 = await enqueue(db, 'keyed', { n: 2 }, { concurrencyKey: 'a' });
  const b = await enqueueMany(db, 'keyed', [{ n: 3 }, { n: 4 }], { concurrencyKey: 'b' });
  const o = await enqueueMany(db, 'keyed', [{ n: 5 }, { n: 6 }], { orderKey: 'o' });
  await enqueue(db, 'keyed', { n: 7 }, { orderKey: 'o' });
  const { rows } = await db.query("SELECT concurrency_key FROM job.jobs WHERE queue = 'keyed' ORDER BY id");
  assert.deepEqual(
    rows.map((r) => r.concurrency_key),
    ['a', 'a', 'b', 'b', null, null, null],
  );
  assert.deepEqual(await claim(db, 'keyed', 10), [a1, b[0], o[0]]);
  assert.deepEqual(await claim(db, 'keyed', 10), []);
  await db.query('SELECT job.complete(id) FROM unnest($1::bigint[]) id', [[a1, b[0], o[0]]]);
  assert.deepEqual(await claim(db, 'keyed', 10), [a2, b[1], o[1]]);
});

test('singleton and debounce keys resolve to the job not yet started', async (t) => {
  const { db } = await testDatabase(t);
  await db.query("SELECT job.create_queue('merged')");
  const s1 = await enqueue(db, 'merged', { v: 1 }, { singletonKey: 'index' });
  const s2 = await enqueue(db, 'merged', { v: 2 }, { singletonKey: 'index' });
  const d1 = await enqueue(db, 'merged', { v: 1 }, { debounceKey: 'user-7', debounce: 5_000, debounceMaxWait: 60_000 });
  const d2 = await enqueue(
    db,
    'merged',
    { v: 2 },
    { debounceKey: 'user-7', debounce: '30 seconds', debounceMaxWait: '1 minute' },
  );
  assert.equal(s2, s1);
  assert.equal(d2, d1);
  const { rows } = await db.query(
    `SELECT id::text AS id, payload, state, extract(epoch FROM run_at - enqueued_at)::float8 AS wait_s
       FROM job.jobs WHERE queue = 'merged' ORDER BY id`,
  );
  assert.equal(rows.length, 2);
  assert.deepEqual([rows[0].id, rows[0].payload, rows[0].state], [s1, { v: 2 }, 'waiting']);
  assert.deepEqual([rows[1].id, rows[1].payload, rows[1].state], [d1, { v: 2 }, 'scheduled']);
  assert.ok(rows[1].wait_s >= 29 && rows[1].wait_s <= 31, `debounced by ${rows[1].wait_s} s`);
  assert.deepEqual(await claim(db, 'merged', 10), [s1], 'the debounced job is not due yet');

  await assert.rejects(() => enqueue(db, 'merged', {}, { debounceKey: 'd', debounce: -1 }), TypeError);
  await assert.rejects(enqueue(db, 'merged', {}, { concurrencyKey: 'k' }), { code: '22023' });
  await assert.rejects(enqueue(db, 'merged', {}, { singletonKey: 's', orderKey: 'o' }), { code: '22023' });
});

test('rateLimitPause holds back a queue or a key until lifted', async (t) => {
  const { db } = await testDatabase(t);
  await db.query("SELECT job.create_queue('held'); SELECT job.create_queue('fair', fair => true)");
  const id = await enqueue(db, 'held', {});
  await rateLimitPause(db, 'held', { until: inAMinute() });
  assert.deepEqual(await claim(db, 'held', 5), []);
  const { rows } = await db.query("SELECT held_until FROM job.queue_settings WHERE queue = 'held'");
  assert.ok(rows[0].held_until instanceof Date);
  await rateLimitPause(db, 'held'); // no until: lifted
  assert.deepEqual(await claim(db, 'held', 5), [id]);

  const x = await enqueue(db, 'fair', {}, { concurrencyKey: 'x' });
  const y = await enqueue(db, 'fair', {}, { concurrencyKey: 'y' });
  await rateLimitPause(db, 'fair', { key: 'x', until: inAMinute().toISOString() });
  assert.deepEqual(await claim(db, 'fair', 5), [y]);
  await rateLimitPause(db, 'fair', { key: 'x', until: null });
  assert.deepEqual(await claim(db, 'fair', 5), [x]);

  // In the caller's transaction: a rollback leaves no hold.
  const z = await enqueueMany(db, 'fair', [{ z: 1 }, { z: 2 }], { concurrencyKey: 'z', orderKey: 'z' });
  await db.query('BEGIN');
  await rateLimitPause(db, 'fair', { until: inAMinute() });
  await db.query('ROLLBACK');
  assert.deepEqual(await claim(db, 'fair', 5), [z[0]]);

  await assert.rejects(rateLimitPause(db, 'no_such_queue', { until: inAMinute() }), { code: '42704' });
});
