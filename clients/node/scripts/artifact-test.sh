#!/usr/bin/env bash
# The package as a user gets it: `npm pack`, installed into a new project elsewhere (npm
# fetches its dependencies from the registry), then the README's example, made whole, run
# against a queue of the cluster at PGJQ_TEST_URL, from an ES module and from CommonJS.
#   bash clients/node/scripts/artifact-test.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
url=${PGJQ_TEST_URL:?PGJQ_TEST_URL names the test cluster}
tmp=$(mktemp -d)
db=pgjq_artifact_node_$$
# The example runs in a database of its own, with the extension (the cluster's default
# database has none), dropped at exit; through the installed pg.
admin() {
    (cd "$tmp/app" && node -e 'const pg = require("pg");
const u = new URL(process.env.PGJQ_TEST_URL); u.pathname = `/${process.argv[1]}`;
const c = new pg.Client(u.toString());
c.connect().then(() => c.query(process.argv[2])).finally(() => c.end()).catch((e) => { console.error(e.message); process.exit(1); });' "$@")
}
db_url() { node -e 'const u = new URL(process.argv[1]); u.pathname = `/${process.argv[2]}`; console.log(u.toString())' "$url" "$db"; }
trap '[ -d "$tmp/app/node_modules/pg" ] && admin postgres "DROP DATABASE IF EXISTS $db WITH (FORCE)"; rm -rf "$tmp"' EXIT
version=$(node -p "require('$here/package.json').version")
(cd "$here" && npm pack --silent --pack-destination "$tmp" >/dev/null)
tarball=$tmp/pg-jobqueue-$version.tgz
[ -f "$tarball" ] || { echo "artifact-test: npm pack made no $tarball" >&2; exit 1; }
mkdir "$tmp/app"
cd "$tmp/app"
npm init -y >/dev/null
npm install --silent --no-audit --no-fund "$tarball" >/dev/null
cat >example.mjs <<'JS'
// The README's example, whole: a worker on 'artifact_emails', and a producer that enqueues in
// its own transaction beside its own write.
import pg from 'pg';
import { Worker, enqueue } from 'pg-jobqueue';

const connection = process.env.DATABASE_URL;
const client = new pg.Client({ connectionString: connection });
await client.connect();
await client.query("SELECT job.create_queue('artifact_emails')");
await client.query('CREATE TABLE IF NOT EXISTS artifact_orders (id serial PRIMARY KEY, customer text)');

const done = new Promise((resolve) => {
  const worker = new Worker('artifact_emails', async (job) => ({ messageId: `m-${job.payload.orderId}` }),
    { connection, concurrency: 10 });
  worker.on('error', (err) => console.error('pg-jobqueue:', err));
  worker.on('completed', async (job, result) => { await worker.close(); resolve([job.id, result]); });
});

await client.query('BEGIN');
const { rows } = await client.query('INSERT INTO artifact_orders (customer) VALUES ($1) RETURNING id', ['ada']);
const id = await enqueue(client, 'artifact_emails', { template: 'confirmation', orderId: rows[0].id });
await client.query('COMMIT');

const [doneId, result] = await done;
const state = await client.query('SELECT state, result FROM job.jobs WHERE id = $1::bigint', [id]);
await client.query("SELECT job.drop_queue('artifact_emails', force => true)");
await client.query('DROP TABLE artifact_orders');
await client.end();
if (doneId !== id || state.rows[0].state !== 'completed' || state.rows[0].result.messageId !== result.messageId) {
  console.error('unexpected:', doneId, id, state.rows[0], result);
  process.exit(1);
}
console.log(`artifact-test: job ${id} completed from the packed tarball (${result.messageId})`);
JS
cat >example.cjs <<'JS'
const { Worker, enqueue } = require('pg-jobqueue');
if (typeof Worker !== 'function' || typeof enqueue !== 'function') process.exit(1);
console.log('artifact-test: require() works');
JS
admin postgres "CREATE DATABASE $db"
admin "$db" "CREATE EXTENSION pg_jobqueue"
DATABASE_URL=$(db_url) timeout 60 node example.mjs
node example.cjs
