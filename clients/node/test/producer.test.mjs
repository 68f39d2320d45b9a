import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { enqueue, enqueueMany } from 'pg-jobqueue';
import { testDatabase } from './helpers.mjs';

test("enqueue in the application's transaction: rollback leaves nothing, commit makes it visible", async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('emails')");
  await db.query('CREATE TABLE orders (id serial PRIMARY KEY, customer text)');
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  onCleanup(() => pool.end());

  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query("INSERT INTO orders (customer) VALUES ('ada')");
    const id = await enqueue(client, 'emails', { template: 'confirmation' });
    assert.match(id, /^\d+$/);
    await client.query('ROLLBACK');
  } finally {
    client.release();
  }
  let jobs = await db.query("SELECT count(*)::int AS n FROM job.jobs WHERE queue = 'emails'");
  assert.equal(jobs.rows[0].n, 0, 'a rolled-back order sends no email');

  const c2 = await pool.connect();
  let id;
  try {
    await c2.query('BEGIN');
    await c2.query("INSERT INTO orders (customer) VALUES ('grace')");
    id = await enqueue(c2, 'emails', { template: 'confirmation' });
    const seen = await db.query('SELECT count(*)::int AS n FROM job.jobs WHERE id = $1::bigint', [id]);
    assert.equal(seen.rows[0].n, 0, 'invisible before commit');
    await c2.query('COMMIT');
  } finally {
    c2.release();
  }
  jobs = await db.query('SELECT state, payload FROM job.jobs WHERE id = $1::bigint', [id]);
  assert.deepEqual(jobs.rows, [{ state: 'waiting', payload: { template: 'confirmation' } }]);
});

test('enqueue maps every option to job.enqueue by name', async (t) => {
  const { db } = await testDatabase(t);
  await db.query("SELECT job.create_queue('opts', max_retries => 5)");
  const runAt = new Date(Date.now() + 3_600_000);
  const a = await enqueue(db, 'opts', { a: 1 }, { runAt, priority: 7, jobType: 'welcome', maxRetries: 2 });
  const b = await enqueue(db, 'opts', { b: 1 }, { delay: 60_000, idempotencyKey: 'k-1' });
  const b2 = await enqueue(db, 'opts', { b: 2 }, { delay: '10 minutes', idempotencyKey: 'k-1' });
  const c = await enqueue(db, 'opts');
  assert.equal(b2, b, 'the idempotency key returns the first job');
  const { rows } = await db.query(
    `SELECT id::text AS job_id, state, priority, job_type, max_retries, payload, idempotency_key,
            extract(epoch FROM run_at) * 1000 AS run_at_ms, extract(epoch FROM run_at - enqueued_at) AS delay_s
       FROM job.jobs WHERE queue = 'opts' ORDER BY id`,
  );
  assert.equal(rows.length, 3);
  const [ra, rb, rc] = rows;
  assert.equal(ra.job_id, a);
  assert.equal(ra.state, 'scheduled');
  assert.equal(ra.priority, 7);
  assert.equal(ra.job_type, 'welcome');
  assert.equal(ra.max_retries, 2);
  assert.ok(Math.abs(Number(ra.run_at_ms) - runAt.getTime()) < 1);
  assert.equal(rb.job_id, b);
  assert.equal(rb.idempotency_key, 'k-1');
  assert.ok(Math.abs(Number(rb.delay_s) - 60) < 1);
  assert.equal(rc.job_id, c);
  assert.deepEqual(rc.payload, {});
  assert.equal(rc.max_retries, 5, "the queue's default");

  await assert.rejects(enqueue(db, 'nope', {}), { code: '42704' });
  await assert.rejects(enqueue(db, 'opts', { x: 1 }, { priority: 1.5 }), { code: '22P02' });
  await assert.rejects(() => enqueue(db, 'opts', [1, 2]), TypeError);
  await assert.rejects(() => enqueue(db, 'opts', {}, { delay: -1 }), TypeError);
});

test('enqueueMany returns ids in payload order and takes priority and jobType', async (t) => {
  const { db } = await testDatabase(t);
  await db.query("SELECT job.create_queue('many')");
  const payloads = Array.from({ length: 500 }, (_, n) => ({ n, text: `quote ' and "double" and \\ and ${'é'}` }));
  const ids = await enqueueMany(db, 'many', payloads, { priority: 3, jobType: 'bulk' });
  assert.equal(ids.length, 500);
  const { rows } = await db.query(
    "SELECT id::text AS job_id, payload, priority, job_type FROM job.jobs WHERE queue = 'many' ORDER BY id",
  );
  assert.deepEqual(
    rows.map((r) => r.job_id),
    ids,
  );
  assert.deepEqual(
    rows.map((r) => r.payload),
    payloads,
  );
  assert.ok(rows.every((r) => r.priority === 3 && r.job_type === 'bulk'));
  assert.deepEqual(await enqueueMany(db, 'many', []), []);
});

test('a query(text, values) adapter returning rows (the Prisma $queryRawUnsafe shape) works too', async (t) => {
  const { db } = await testDatabase(t);
  await db.query("SELECT job.create_queue('adapted')");
  // What a Prisma transaction client adapter looks like: tx.$queryRawUnsafe(text, ...values)
  // resolves to the rows themselves.
  const tx = { $queryRawUnsafe: async (text, ...values) => (await db.query(text, values)).rows };
  const adapter = { query: (text, values) => tx.$queryRawUnsafe(text, ...values) };
  const id = await enqueue(adapter, 'adapted', { via: 'adapter' }, { delay: 1000 });
  const ids = await enqueueMany(adapter, 'adapted', [{ a: 1 }, { a: 2 }]);
  const { rows } = await db.query("SELECT id::text AS job_id FROM job.jobs WHERE queue = 'adapted' ORDER BY id");
  assert.deepEqual(
    rows.map((r) => r.job_id),
    [id, ...ids],
  );
  // Knex: trx.raw takes ? placeholders (and returns the node-postgres result); the library's
  // statements use each $n once, in order, so the adapter swaps them.
  const trx = {
    raw: (sql, bindings) => {
      let i = 0;
      return db.query(
        sql.replace(/\?/g, () => `$${++i}`),
        bindings,
      );
    },
  };
  const knexAdapter = { query: (text, values) => trx.raw(text.replace(/\$\d+/g, '?'), values) };
  const kid = await enqueue(knexAdapter, 'adapted', { via: 'knex' }, { priority: 1, jobType: 'k' });
  assert.match(kid, /^\d+$/);
});
