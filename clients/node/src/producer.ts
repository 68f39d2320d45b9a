import type { JsonObject, JsonPayload, NotArray } from './json.js';
import { intervalParam, type Queryable, rowsOf } from './sql.js';

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
  /**
   * The job's key for the queue's per-key limits and fair turns (`concurrency_key`): the queue
   * needs `key_concurrency`, `key_rate_limit` or `fair`.
   */
  concurrencyKey?: string;
  /** Jobs of this key start one at a time, oldest first (`order_key`). */
  orderKey?: string;
  /**
   * At most one job of this key waits and one runs (`singleton_key`): while one waits, this
   * enqueue replaces its payload and resolves to its id.
   */
  singletonKey?: string;
  /**
   * Enqueues of this key merge into one job, which starts once none came for `debounce`
   * (`debounce_key`; needs `debounce`, and no `runAt` or `delay`). Resolves to that job's id.
   */
  debounceKey?: string;
  /** With `debounceKey`: the quiet time before the job starts (`debounce`): ms, or an interval string. */
  debounce?: number | string;
  /** With `debounceKey`: the job starts at most this long after the first enqueue (`debounce_max_wait`). */
  debounceMaxWait?: number | string;
}

/** Options of {@link enqueueMany}: those `job.enqueue_many` takes, for every job of the call. */
export interface EnqueueManyOptions {
  priority?: number;
  jobType?: string;
  /** `concurrency_key` of every job. */
  concurrencyKey?: string;
  /** `order_key` of every job: they run one at a time, in payload order. */
  orderKey?: string;
}

/** Options of {@link rateLimitPause}. */
export interface RateLimitPauseOptions {
  /** Hold back only the jobs of this concurrency key (`key`); default: the whole queue. */
  key?: string;
  /**
   * Until when (`until`): a Date, or a timestamp string PostgreSQL understands. Left out, or
   * null, or a past time: lifts the hold.
   */
  until?: Date | string | null;
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
 * Resolves to the job's id (a string: see the README, "Ids").  `payload` is checked to be
 * JSON-safe (no `Date`, `undefined`, functions, bigints); `enqueue<Payload>(...)` checks it
 * against the type a `Worker<Payload>` expects.
 */
export async function enqueue<P extends JsonPayload<P> = JsonObject>(
  client: Queryable,
  queue: string,
  payload?: NotArray<P>,
  opts: EnqueueOptions = {},
): Promise<string> {
  const values: unknown[] = [queue, payloadJson(payload === undefined ? {} : payload, 'payload')];
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
  if (opts.concurrencyKey !== undefined) add('concurrency_key', 'text', opts.concurrencyKey);
  if (opts.orderKey !== undefined) add('order_key', 'text', opts.orderKey);
  if (opts.singletonKey !== undefined) add('singleton_key', 'text', opts.singletonKey);
  if (opts.debounceKey !== undefined) add('debounce_key', 'text', opts.debounceKey);
  if (opts.debounce !== undefined) add('debounce', 'interval', intervalParam('debounce', opts.debounce));
  if (opts.debounceMaxWait !== undefined) {
    add('debounce_max_wait', 'interval', intervalParam('debounceMaxWait', opts.debounceMaxWait));
  }
  const args = ['$1::text', '$2::jsonb', ...named].join(', ');
  const rows = await rowsOf<{ id: string }>(client, `SELECT job.enqueue(${args})::text AS id`, values);
  return String(rows[0]?.id);
}

/**
 * Enqueues many jobs in one statement (`job.enqueue_many`); resolves to their ids in payload
 * order.  Like {@link enqueue}, it joins `client`'s transaction if there is one, and checks
 * the payloads' type.
 */
export async function enqueueMany<P extends JsonPayload<P> = JsonObject>(
  client: Queryable,
  queue: string,
  payloads: readonly NotArray<P>[],
  opts: EnqueueManyOptions = {},
): Promise<string[]> {
  if (!Array.isArray(payloads)) throw new TypeError('payloads must be an array of JSON objects');
  if (payloads.length === 0) return [];
  const json = `[${payloads.map((p, i) => payloadJson(p, `payloads[${i}]`)).join(',')}]`;
  const values: unknown[] = [queue, json];
  const named: string[] = [];
  const add = (name: string, cast: string, value: unknown) => {
    values.push(value);
    named.push(`${name} => $${values.length}::${cast}`);
  };
  if (opts.priority !== undefined) add('priority', 'int', opts.priority);
  if (opts.jobType !== undefined) add('job_type', 'text', opts.jobType);
  if (opts.concurrencyKey !== undefined) add('concurrency_key', 'text', opts.concurrencyKey);
  if (opts.orderKey !== undefined) add('order_key', 'text', opts.orderKey);
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

/**
 * Holds back `queue`, or only its jobs of concurrency key `opts.key`, until `opts.until`
 * (`job.rate_limit_pause`): claims hand out none of them before then; running jobs go on. A
 * call without `until` lifts the hold; a later call replaces it. What a handler does when the
 * service it calls answers 429 (then throws with `retryAfter`, so the job is retried). Like
 * {@link enqueue}, it joins `client`'s transaction if there is one.
 */
export async function rateLimitPause(
  client: Queryable,
  queue: string,
  opts: RateLimitPauseOptions = {},
): Promise<void> {
  const values: unknown[] = [queue];
  const named: string[] = [];
  if (opts.key !== undefined) {
    values.push(opts.key);
    named.push(`key => $${values.length}::text`);
  }
  if (opts.until !== undefined && opts.until !== null) {
    values.push(opts.until instanceof Date ? opts.until.toISOString() : opts.until);
    named.push(`until => $${values.length}::timestamptz`);
  }
  // Cast: not every adapter reads a `void` column (Prisma does not).
  await rowsOf(client, `SELECT job.rate_limit_pause(${['$1::text', ...named].join(', ')})::text AS done`, values);
}
