// The library against a raw SQL loop doing the same work its simplest correct way, in the same
// run, on the same database; then the pick-up latency of an idle worker (LISTEN).  Prints a
// Markdown table.  Run by bench/client-node.sh at the repository root:
//   node bench/bench.mjs postgresql://postgres@127.0.0.1:55434/postgres
// Environment: BENCH_NODE_JOBS [50000], BENCH_NODE_ROUNDS [2], BENCH_NODE_LATENCY_SAMPLES [200]
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { enqueue, enqueueMany, Worker } from 'pg-jobqueue';

const adminUrl = process.argv[2];
if (!adminUrl) {
  console.error('usage: node bench/bench.mjs POSTGRES_URL');
  process.exit(2);
}
const JOBS = Number(process.env.BENCH_NODE_JOBS ?? 50_000);
const ROUNDS = Number(process.env.BENCH_NODE_ROUNDS ?? 2);
const SAMPLES = Number(process.env.BENCH_NODE_LATENCY_SAMPLES ?? 200);
const WORKERS = 8;
const CONCURRENCY = 4;
const QUEUE = 'node_bench';

const dbName = `bench_node_${randomBytes(3).toString('hex')}`;
const url = (() => {
  const u = new URL(adminUrl);
  u.pathname = `/${dbName}`;
  return u.toString();
})();
const log = (...a) => console.error(...a);

async function withAdmin(fn) {
  const c = new pg.Client(adminUrl);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function fill(db) {
  await db.query('TRUNCATE job.finished_jobs');
  for (let start = 0; start < JOBS; start += 10_000) {
    const n = Math.min(10_000, JOBS - start);
    await enqueueMany(
      db,
      QUEUE,
      Array.from({ length: n }, (_, i) => ({ n: start + i })),
    );
  }
  await db.query('VACUUM (ANALYZE) job.live_jobs, job.finished_jobs');
  await db.query('CHECKPOINT');
}

async function checkDone(db) {
  const { rows } = await db.query(
    "SELECT count(*) FILTER (WHERE state = 'completed')::int AS done, count(*)::int AS total FROM job.jobs WHERE queue = $1",
    [QUEUE],
  );
  if (rows[0].done !== JOBS || rows[0].total !== JOBS) throw new Error(`round left ${JSON.stringify(rows[0])}`);
}

// The library: 8 workers with concurrency 4, a handler that does nothing.
async function library() {
  let completed = 0;
  let resolve;
  const done = new Promise((r) => {
    resolve = r;
  });
  const workers = Array.from(
    { length: WORKERS },
    (_, i) =>
      new Worker(
        QUEUE,
        async () => {
          return undefined;
        },
        { connection: url, concurrency: CONCURRENCY, autorun: false, name: `lib-${i}` },
      ),
  );
  for (const w of workers) {
    w.on('completed', () => {
      if (++completed === JOBS) resolve();
    });
    w.on('error', (e) => log('worker error:', e.message));
  }
  const t0 = performance.now();
  for (const w of workers) w.run();
  await done;
  const seconds = (performance.now() - t0) / 1000;
  await Promise.all(workers.map((w) => w.close()));
  return JOBS / seconds;
}

// The raw loop: 8 connections, each `dequeue` 4 then `complete_many` with the claim's token.
async function raw() {
  const clients = await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      const c = new pg.Client(url);
      await c.connect();
      return c;
    }),
  );
  const t0 = performance.now();
  await Promise.all(
    clients.map(async (c, i) => {
      for (;;) {
        const { rows } = await c.query('SELECT id, lease_token FROM job.dequeue($1, $2, $3)', [
          QUEUE,
          `raw-${i}`,
          CONCURRENCY,
        ]);
        if (rows.length === 0) return;
        await c.query('SELECT job.complete_many($1::bigint[], ARRAY[$2::uuid])', [
          rows.map((r) => r.id),
          rows[0].lease_token,
        ]);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  await Promise.all(clients.map((c) => c.end()));
  return JOBS / seconds;
}

async function latency() {
  const starts = new Map();
  const lat = [];
  const worker = new Worker(
    QUEUE,
    async (job) => {
      lat.push(performance.now() - starts.get(job.payload.k));
    },
    { connection: url, concurrency: 1 },
  );
  worker.on('error', (e) => log('worker error:', e.message));
  await worker.waitUntilReady();
  if (!worker.listening) throw new Error('the latency worker is not listening');
  const producer = new pg.Client(url);
  await producer.connect();
  for (let k = 0; k < SAMPLES; k++) {
    await new Promise((r) => setTimeout(r, 20 + Math.random() * 20)); // idle again
    starts.set(k, performance.now());
    await enqueue(producer, QUEUE, { k });
  }
  const deadline = Date.now() + 10_000;
  while (lat.length < SAMPLES && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await worker.close();
  await producer.end();
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  return { p50: q(0.5), p99: q(0.99), max: lat[lat.length - 1], n: lat.length };
}

await withAdmin(async (a) => {
  await a.query(`CREATE DATABASE ${dbName}`);
});
try {
  const db = new pg.Client(url);
  await db.connect();
  await db.query('CREATE EXTENSION pg_jobqueue');
  await db.query('SELECT job.create_queue($1, max_retries => 0)', [QUEUE]);
  const results = { library: [], raw: [] };
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 === 1 ? ['library', 'raw'] : ['raw', 'library'];
    for (const side of order) {
      await fill(db);
      const cpu0 = process.cpuUsage();
      const w0 = performance.now();
      const rate = side === 'library' ? await library() : await raw();
      const cpu = process.cpuUsage(cpu0);
      log(`  ${side} node cpu ${(((cpu.user + cpu.system) / 1000 / (performance.now() - w0)) * 100).toFixed(0)}%`);
      await checkDone(db);
      results[side].push(rate);
      log(`  ${side.padEnd(7)} round ${round}: ${Math.round(rate)} jobs/s`);
    }
  }
  await db.query('TRUNCATE job.finished_jobs');
  const lat = await latency();
  const settings = (
    await db.query(
      "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) AS s FROM pg_settings WHERE name IN ('synchronous_commit', 'fsync')",
    )
  ).rows[0].s;
  await db.end();

  const mean = (xs) => xs.reduce((s, x) => s + x, 0) / xs.length;
  const lib = mean(results.library);
  const rawRate = mean(results.raw);
  const fmt = (n) => Math.round(n).toLocaleString('en-US');
  console.log(`## Node client (clients/node, pg-jobqueue)

${JOBS.toLocaleString('en-US')} no-op jobs per run, ${WORKERS} workers × concurrency ${CONCURRENCY}, ${ROUNDS} run(s) per side alternating, mean; ${settings}; Node ${process.version}.

| measurement | value |
|---|---:|
| library: \`new Worker(q, async () => {}, { concurrency: ${CONCURRENCY} })\` × ${WORKERS} | ${fmt(lib)} jobs/s |
| raw SQL loop: ${WORKERS} connections × (\`dequeue\` batch ${CONCURRENCY} → \`complete_many\` with token) | ${fmt(rawRate)} jobs/s |
| library / raw | ${(lib / rawRate).toFixed(2)}× (aim ≥ 0.8×) |
| pick-up latency, enqueue → handler start, idle worker on LISTEN (${lat.n} samples) | p50 ${lat.p50.toFixed(1)} ms, p99 ${lat.p99.toFixed(1)} ms, max ${lat.max.toFixed(1)} ms |`);
} finally {
  await withAdmin((a) => a.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`));
}
