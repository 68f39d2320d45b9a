import { intervalParam, type Queryable, rowsOf } from './sql.js';

/** A job's payload: a JSON object (the extension refuses anything else). */
export type JsonObject = { [key: string]: unknown };

/** Options of {@link enqueue}; each maps to the `job.enqueue` argument of the same name. */
export interface EnqueueOptions {
  /** Ready at this time (`run_at`). A Date, or a timestamp string PostgreSQL understands. */
  runAt?: Date | string;
  /** Ready after this long (`delay`): milliseconds, or a PostgreSQL interval such as `'10 minutes'`. */
  delay?: number | string;
  /** Higher first (`priority`, default 0). */
  priority?: number;
  /** At most one job per key within the queue's idempotency window (`idempotency_key`). */
  idempotencyKey?: string;
  /** Retries after the first attempt (`max_retries`; default: the queue's). */
  maxRetries?: number;
  /** A label for metrics and handlers (`job_type`). */
  jobType?: string;
}

/** Options of {@link enqueueMany}: those `job.enqueue_many` takes. */
export interface EnqueueManyOptions {
  priority?: number;
  jobType?: string;
}

function payloadJson(payload: unknown, what: string): string {
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    throw new TypeError(`${what} must be a JSON object`);
  }
  return JSON.stringify(payload);
}

/**
 * Enqueues one job with `client`, which may be inside the application's own transaction:
 * the job then becomes visible when that transaction commits, and never if it rolls back.
 * Resolves to the job's id (a string: see the README, "Ids").
 */
export async function enqueue(
  client: Queryable,
  queue: string,
  payload: JsonObject = {},
  opts: EnqueueOptions = {},
): Promise<string> {
  const values: unknown[] = [queue, payloadJson(payload, 'payload')];
  const named: string[] = [];
  const add = (name: string, cast: string, value: unknown) => {
    values.push(value);
    named.push(`${name} => $${values.length}::${cast}`);
  };
  if (opts.runAt !== undefined) {
    add('run_at', 'timestamptz', opts.runAt instanceof Date ? opts.runAt.toISOString() : opts.runAt);
  }
  if (opts.delay !== undefined) add('delay', 'interval', intervalParam('delay', opts.delay));
  if (opts.priority !== undefined) add('priority', 'int', opts.priority);
  if (opts.idempotencyKey !== undefined) add('idempotency_key', 'text', opts.idempotencyKey);
  if (opts.maxRetries !== undefined) add('max_retries', 'int', opts.maxRetries);
  if (opts.jobType !== undefined) add('job_type', 'text', opts.jobType);
  const args = ['$1::text', '$2::jsonb', ...named].join(', ');
  const rows = await rowsOf<{ id: string }>(client, `SELECT job.enqueue(${args})::text AS id`, values);
  return String(rows[0]?.id);
}

/**
 * Enqueues many jobs in one statement (`job.enqueue_many`); resolves to their ids in payload
 * order.  Like {@link enqueue}, it joins `client`'s transaction if there is one.
 */
export async function enqueueMany(
  client: Queryable,
  queue: string,
  payloads: readonly JsonObject[],
  opts: EnqueueManyOptions = {},
): Promise<string[]> {
  if (!Array.isArray(payloads)) throw new TypeError('payloads must be an array of JSON objects');
  if (payloads.length === 0) return [];
  const json = `[${payloads.map((p, i) => payloadJson(p, `payloads[${i}]`)).join(',')}]`;
  const values: unknown[] = [queue, json];
  const named: string[] = [];
  if (opts.priority !== undefined) {
    values.push(opts.priority);
    named.push(`priority => $${values.length}::int`);
  }
  if (opts.jobType !== undefined) {
    values.push(opts.jobType);
    named.push(`job_type => $${values.length}::text`);
  }
  const args = [
    '$1::text',
    'ARRAY(SELECT e FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS a(e, n) ORDER BY n)',
    ...named,
  ].join(', ');
  const rows = await rowsOf<{ id: string }>(
    client,
    `SELECT t.id::text AS id FROM job.enqueue_many(${args}) WITH ORDINALITY AS t(id, n) ORDER BY t.n`,
    values,
  );
  return rows.map((r) => String(r.id));
}
