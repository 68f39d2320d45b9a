// Test databases on a real, preloaded pg_jobqueue cluster: each test gets its own database
// (unique per run, dropped afterwards), so test files may run in parallel.
//   PGJQ_TEST_URL     a superuser URL of the cluster (required)
//   PGJQ_BOUNCER_URL  a PgBouncer in transaction pooling in front of it (pgbouncer tests)
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import pg from 'pg';

export const TEST_URL = process.env.PGJQ_TEST_URL;
export const BOUNCER_URL = process.env.PGJQ_BOUNCER_URL;
if (!TEST_URL) {
  throw new Error(
    'PGJQ_TEST_URL is not set: start a cluster (bash scripts/cluster.sh start nodet 56120) and set ' +
      'PGJQ_TEST_URL=postgresql://postgres@127.0.0.1:56120/postgres (see clients/node/README.md, "Development")',
  );
}

/** `url` with its database replaced. */
export function withDatabase(url, database) {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

let counter = 0;

/**
 * A fresh database with pg_jobqueue, dropped when the test ends.  Returns its URLs (direct and,
 * when PGJQ_BOUNCER_URL is set, through the pooler) and a connected client `db`.
 */
export async function testDatabase(t, { synchronousCommit = 'off' } = {}) {
  const name = `pgjq_node_${process.pid}_${++counter}_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client(TEST_URL);
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.query(`ALTER DATABASE ${name} SET synchronous_commit = ${synchronousCommit}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(TEST_URL, name);
  const db = new pg.Client(url);
  await db.connect();
  await db.query('CREATE EXTENSION pg_jobqueue');
  const cleanups = [];
  t.after(async () => {
    for (const fn of cleanups.reverse()) await fn();
    await db.end().catch(() => undefined);
    const a = new pg.Client(TEST_URL);
    await a.connect();
    try {
      await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    } finally {
      await a.end();
    }
  });
  return {
    name,
    url,
    bouncerUrl: BOUNCER_URL ? withDatabase(BOUNCER_URL, name) : undefined,
    db,
    /** Runs `fn` when the test ends, before the database is dropped (workers' close). */
    onCleanup(fn) {
      cleanups.push(fn);
    },
  };
}

/** Resolves when `predicate()` becomes true (checked every `every` ms), or rejects after `ms`. */
export async function waitFor(predicate, { ms = 30_000, every = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** Resolves with the arguments of the next `event` of `emitter`, or rejects after `ms`. */
export async function nextEvent(emitter, event, ms = 30_000) {
  return once(emitter, event, { signal: AbortSignal.timeout(ms) });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Collects a worker's errors so a test can assert there were none (and see them if any). */
export function collectErrors(worker) {
  const errors = [];
  worker.on('error', (e) => errors.push(e));
  return errors;
}
