import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import pg from 'pg';
import { failureDetails, LeaseLostError, WorkerClosingError } from './errors.js';
import type { JsonObject, JsonPayload } from './json.js';
import { msInterval } from './sql.js';

/** The channel pg_jobqueue notifies on; the payload is `job.queue_id(queue)` as text. */
export const CHANNEL = 'pg_jobqueue';
const PROBE_PREFIX = 'pg-jobqueue-probe:';

/** A claimed job, as a handler sees it. */
export interface Job<P = JsonObject> {
  /** The job's id: a bigint in PostgreSQL, a decimal string here (see the README, "Ids"). */
  readonly id: string;
  readonly queue: string;
  readonly jobType: string | null;
  readonly payload: P;
  /** 1 on the first try. */
  readonly attempt: number;
  readonly maxRetries: number;
  readonly enqueuedAt: Date;
  /** When the lease runs out unless renewed (the worker renews it while the handler runs). */
  readonly leaseExpiresAt: Date;
  /** The claim's lease token (shared by the jobs of one `dequeue`). */
  readonly token: string;
  /** The worker's name, as recorded in `claimed_by`. */
  readonly worker: string;
  /**
   * Aborted when this worker no longer holds the job (its lease was lost: another worker may
   * run it now) or when the worker closes before the handler finished.  Pass it to `fetch`
   * and friends, or check `signal.aborted` between steps.
   */
  readonly signal: AbortSignal;
}

export type Handler<P = JsonObject, R = unknown> = (job: Job<P>) => Promise<R> | R;

/** Where the worker's own queries go: a connection string, a pool config, or your `pg.Pool`. */
export type Connection = string | pg.PoolConfig | pg.Pool;

export interface WorkerOptions {
  /**
   * The database: a connection string, a `pg.PoolConfig`, or an existing `pg.Pool` (which the
   * worker uses but never ends).  May go through PgBouncer in transaction pooling mode.
   */
  connection: Connection;
  /** Handlers running at once (default 1). */
  concurrency?: number;
  /** The most jobs one `dequeue` claims (default: `concurrency`); never more than free slots. */
  batch?: number;
  /** Lease per claim in milliseconds (default 30000); renewed automatically. */
  lease?: number;
  /**
   * How often running jobs' leases are renewed, in milliseconds (default `lease / 3`);
   * `false` turns renewal off (a handler must then finish within the lease).
   */
  heartbeat?: number | false;
  /**
   * Wake-ups: `true` (default) LISTENs on a dedicated connection opened like `connection`,
   * checks that notifications arrive (they never do through PgBouncer in transaction pooling)
   * and polls otherwise; a connection string or `pg.ClientConfig` LISTENs on that direct
   * connection instead (use this behind PgBouncer); `false` only polls.
   */
  listen?: boolean | string | pg.ClientConfig;
  /** How long the LISTEN check waits for its own notification, in milliseconds (default 5000). */
  listenProbeTimeout?: number;
  /**
   * What the worker does when its queue does not exist at start: `false` (default) stops it
   * (`waitUntilReady()` rejects, one `error` event, then `closed`); `true` waits for the
   * queue to be created, looking again with a backoff of up to 30 s.
   */
  waitForQueue?: boolean;
  /**
   * When polling, the longest sleep between looks, in milliseconds (default 5000): the
   * pick-up delay for new work.  Sleeps end earlier when `job.next_due` says a delayed job,
   * a retry or an expired lease comes due sooner.
   */
  pollInterval?: number;
  /**
   * When listening, the longest wait without a notification before looking anyway, in
   * milliseconds (default 30000).
   */
  maxListenWait?: number;
  /** Recorded as `claimed_by` (default `host:pid:random`); at most 128 visible characters. */
  name?: string;
  /** Size of the pool the worker creates when `connection` is not a `pg.Pool` (default `min(concurrency + 1, 4)`). */
  poolSize?: number;
  /** Start at once (default true); otherwise call `run()`. */
  autorun?: boolean;
}

export interface CloseOptions {
  /**
   * How long to wait for running handlers, in milliseconds (default 25000, inside
   * Kubernetes' default 30 s termination grace).  Handlers still running then have their
   * `signal` aborted and their attempt recorded as a transient failure, so the job is retried.
   */
  gracePeriod?: number;
}

/** Why a job was lost: the worker no longer held its claim when it looked. */
export type LostReason = 'heartbeat' | 'complete' | 'fail';

export interface WorkerStats {
  claimed: number;
  completed: number;
  failed: number;
  lost: number;
  released: number;
}

export interface WorkerEvents<P, R> {
  /** A handler started. */
  active: [job: Job<P>];
  /** The job completed with the handler's result. */
  completed: [job: Job<P>, result: R];
  /** The handler threw; `state` is the job's new state: `scheduled`/`waiting` (retried) or `dead`. */
  failed: [job: Job<P>, error: unknown, state: string];
  /**
   * The worker no longer holds the job (its lease ran out and it was taken back, maybe by
   * another worker, or it was cancelled): nothing it does with the job is recorded.
   */
  lost: [job: Job<P>, reason: LostReason];
  /** A claimed job was handed back unstarted (`job.release`) because the worker is closing. */
  released: [job: Job<P>];
  /** A `dequeue` came back empty after the worker had processed jobs. */
  drained: [];
  /** Wake-ups now arrive by LISTEN (`true`) or the worker polls (`false`). */
  listening: [listening: boolean];
  /** A database or connection problem; the worker carries on (retrying with backoff). */
  error: [error: Error];
  /** `close()` finished. */
  closed: [];
}

interface ClaimRow {
  id: string;
  queue: string;
  job_type: string | null;
  payload: unknown;
  attempt: number;
  max_retries: number;
  enqueued_at: Date;
  lease_expires_at: Date;
  lease_token: string;
}

interface Entry<P> {
  job: JobImpl<P>;
  abort: AbortController;
  /** performance.now() of the claim or the last renewal (the claim: when its dequeue was sent). */
  renewedAt: number;
  lost: boolean;
  /** Given up on at close: whatever its handler does later is not recorded. */
  abandoned: boolean;
  /** The handler returned or threw; its outcome is being recorded. */
  settling: boolean;
  done: Promise<void>;
}

class JobImpl<P> implements Job<P> {
  leaseExpiresAt: Date;
  constructor(
    readonly id: string,
    readonly queue: string,
    readonly jobType: string | null,
    readonly payload: P,
    readonly attempt: number,
    readonly maxRetries: number,
    readonly enqueuedAt: Date,
    leaseExpiresAt: Date,
    readonly token: string,
    readonly worker: string,
    readonly signal: AbortSignal,
  ) {
    this.leaseExpiresAt = leaseExpiresAt;
  }
}

/** Resolves `wait()` on the next `notify()`, or at once if one came since the last `clear()`. */
class Wakeup {
  private pending = false;
  private resolve: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;

  notify(): void {
    this.pending = true;
    this.fire();
  }

  clear(): void {
    this.pending = false;
  }

  wait(ms: number): Promise<void> {
    if (this.pending) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.resolve = resolve;
      this.timer = setTimeout(() => this.fire(), Math.max(0, ms));
    });
  }

  private fire(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const resolve = this.resolve;
    this.resolve = null;
    resolve?.();
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** How long to wait before looking again after `streak` failed looks in a row: 250 ms doubling, at most 30 s. */
const retryDelayMs = (streak: number) => Math.min(30_000, 250 * 2 ** Math.min(streak, 7));

function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new TypeError(`${name} must be an integer >= 1, got ${value}`);
  return value;
}

function positiveMs(name: string, value: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new TypeError(`${name} must be a positive number of milliseconds, got ${String(value)}`);
  }
  return value;
}

function isPool(c: Connection): c is pg.Pool {
  const p = c as Partial<pg.Pool>;
  return typeof p === 'object' && p !== null && typeof p.connect === 'function' && typeof p.query === 'function';
}

function claimKey(id: string, token: string): string {
  return `${id}/${token}`;
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

/** The result as jsonb text; undefined (or a function) stores NULL. */
function toJson(result: unknown): string | null {
  if (result === undefined) return null;
  const s = JSON.stringify(result);
  return s === undefined ? null : s;
}

/** PostgreSQL text cannot hold NUL characters. */
function withoutNul(s: string): string {
  return s.includes('\u0000') ? s.replaceAll('\u0000', '\\0') : s;
}

function defaultName(): string {
  const host = hostname()
    .replace(/[^\x21-\x7e]/g, '?')
    .slice(0, 80);
  return `${host}:${process.pid}:${randomUUID().slice(0, 8)}`;
}

// heartbeat_many and complete_many match a job's token against ANY of the tokens given, not
// the token paired with it: a call mixing claims could renew or complete a job this worker
// lost and claimed again (same id, new token) through the other claim's token.  So each
// call here covers one claim (one token), grouped in SQL, one statement either way.
const BY_CLAIM =
  '(SELECT t.token, array_agg(t.id ORDER BY t.n) AS ids ' +
  'FROM unnest($1::bigint[], $2::uuid[]) WITH ORDINALITY AS t(id, token, n) GROUP BY t.token) g';
// A claim's rows as the handler sees them; ids and tokens as text whatever type parsers the
// application installed.
const DEQUEUE_SQL =
  'SELECT id::text AS id, queue, job_type, payload, attempt, max_retries, enqueued_at, ' +
  'lease_expires_at, lease_token::text AS lease_token FROM job.dequeue($1::text, $2::text, $3::int, $4::interval)';
const COMPLETE_ONE_SQL = 'SELECT job.complete($1::bigint, $2::jsonb, $3::uuid) AS ok';
const COMPLETE_EACH_SQL =
  'SELECT t.n, job.complete(t.id, t.result::jsonb, t.token) AS ok ' +
  'FROM unnest($1::bigint[], $2::text[], $3::uuid[]) WITH ORDINALITY AS t(id, result, token, n) ORDER BY t.n';
// All or nothing: a cast that fails (at run time: the count is not constant) rolls the
// statement back when complete_many completed fewer than all.
const NOT_ALL_COMPLETED = 'pg-jobqueue: complete_many completed fewer than all';
const COMPLETE_ALL_OR_NONE_SQL =
  `SELECT CASE WHEN s.n = $3::int THEN s.n ELSE ('${NOT_ALL_COMPLETED}: ' || s.n)::int END AS n ` +
  `FROM (SELECT coalesce(sum(job.complete_many(g.ids, ARRAY[g.token])), 0)::int AS n FROM ${BY_CLAIM}) s`;

function isNotAllCompleted(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  return e.code === '22P02' && typeof e.message === 'string' && e.message.includes(NOT_ALL_COMPLETED);
}

// job.fail given a stale token records nothing and returns NULL (from 0.5.0); up to 0.4.0 it
// returned the job's current state, which may be one a recorded failure also returns
// ('waiting', 'scheduled', 'dead').  Renewing the claim first, in the same statement, tells
// the two apart on either version (and keeps the row locked for the fail).
const FAIL_SQL =
  'SELECT CASE WHEN (SELECT h.held FROM job.heartbeat_many(ARRAY[$1::bigint], ARRAY[$6::uuid]) h) ' +
  'THEN job.fail($1::bigint, $2::text, $3::boolean, $4::int, $5::interval, $6::uuid) END AS state';
const HEARTBEAT_SQL =
  'SELECT h.id::text AS id, g.token::text AS token, h.held, h.lease_expires_at ' +
  `FROM ${BY_CLAIM} CROSS JOIN LATERAL job.heartbeat_many(g.ids, ARRAY[g.token], $3::interval) h`;
const RELEASE_SQL =
  'SELECT t.id::text AS id, job.release(t.id, t.token) AS ok FROM unnest($1::bigint[], $2::uuid[]) AS t(id, token)';
const NEXT_DUE_SQL = 'SELECT (extract(epoch FROM job.next_due($1::text) - now()) * 1000)::float8 AS ms';
const QUEUE_ID_SQL = 'SELECT job.queue_id($1::text)::text AS id';
/** The SQLSTATE of `queue 'x' does not exist`. */
const UNDEFINED_OBJECT = '42704';

interface Pending {
  entry: Entry<unknown>;
  result: string | null;
  resolve: (ok: boolean) => void;
  reject: (err: unknown) => void;
}

/**
 * Runs `handler` for the jobs of `queue`, up to `concurrency` at once: claims in batches sized
 * to its free slots, sleeps on LISTEN (or polls with `job.next_due`), renews leases while
 * handlers run, completes with the handler's result or fails with its error, always with the
 * claim's lease token.  `await worker.close()` stops it gracefully.
 */
export class Worker<P extends JsonPayload<P> = JsonObject, R = unknown> extends EventEmitter<WorkerEvents<P, R>> {
  readonly queue: string;
  readonly name: string;
  readonly concurrency: number;
  readonly batch: number;
  readonly lease: number;
  readonly heartbeat: number | false;
  readonly pollInterval: number;
  readonly maxListenWait: number;
  readonly stats: WorkerStats = { claimed: 0, completed: 0, failed: 0, lost: 0, released: 0 };

  private readonly handler: Handler<P, R>;
  private readonly pool: pg.Pool;
  private readonly ownsPool: boolean;
  private readonly listenConfig: pg.ClientConfig | null;
  private readonly listenProbeTimeout: number;
  private readonly waitForQueue: boolean;
  private readonly leaseInterval: string;
  private readonly active = new Map<string, Entry<P>>();
  private readonly wake = new Wakeup();
  private listenClient: pg.Client | null = null;
  private listenBackoff = 0;
  private listenTimer: NodeJS.Timeout | null = null;
  private probe: { payload: string; resolve: () => void } | null = null;
  private queueId: string | null = null;
  private isListening = false;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private beating = false;
  private started = false;
  private poolEnded = false;
  private closing = false;
  private loopDone: Promise<void> = Promise.resolve();
  private closePromise: Promise<void> | null = null;
  private acks: Pending[] = [];
  private ackScheduled = false;
  private readyResolve!: () => void;
  private readyReject!: (error: Error) => void;
  private readonly ready = new Promise<void>((resolve, reject) => {
    this.readyResolve = resolve;
    this.readyReject = reject;
  });

  constructor(queue: string, handler: Handler<P, R>, options: WorkerOptions) {
    super();
    if (typeof queue !== 'string' || queue === '') throw new TypeError('queue must be a non-empty string');
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    if (!options || options.connection === undefined || options.connection === null) {
      throw new TypeError('options.connection is required (a connection string, a pg.PoolConfig or a pg.Pool)');
    }
    this.queue = queue;
    this.handler = handler;
    this.concurrency = positiveInt('concurrency', options.concurrency ?? 1);
    this.batch = positiveInt('batch', options.batch ?? this.concurrency);
    this.lease = positiveMs('lease', options.lease ?? 30_000);
    this.heartbeat = options.heartbeat === false ? false : positiveMs('heartbeat', options.heartbeat ?? this.lease / 3);
    this.pollInterval = positiveMs('pollInterval', options.pollInterval ?? 5_000);
    this.maxListenWait = positiveMs('maxListenWait', options.maxListenWait ?? 30_000);
    this.listenProbeTimeout = positiveMs('listenProbeTimeout', options.listenProbeTimeout ?? 5_000);
    this.waitForQueue = options.waitForQueue ?? false;
    if (typeof this.waitForQueue !== 'boolean') throw new TypeError('waitForQueue must be a boolean');
    // Nobody need await waitUntilReady(): its rejection (no such queue) is the error event too.
    this.ready.catch(() => undefined);
    this.leaseInterval = msInterval('lease', this.lease);
    this.name = options.name ?? defaultName();
    if (this.name.length > 128 || /[\p{Cc}]/u.test(this.name) || this.name.trim() === '') {
      throw new TypeError('name must be 1 to 128 visible characters without control characters');
    }

    const connection = options.connection;
    let baseConfig: pg.ClientConfig;
    if (isPool(connection)) {
      this.pool = connection;
      this.ownsPool = false;
      baseConfig = (connection as unknown as { options?: pg.ClientConfig }).options ?? {};
    } else {
      baseConfig = typeof connection === 'string' ? { connectionString: connection } : { ...connection };
      const max = positiveInt('poolSize', options.poolSize ?? Math.min(this.concurrency + 1, 4));
      this.pool = new pg.Pool({ application_name: 'pg-jobqueue worker', ...baseConfig, max });
      this.ownsPool = true;
      this.pool.on('error', (err) => this.reportError(err));
    }
    const listen = options.listen ?? true;
    if (listen === false) {
      this.listenConfig = null;
    } else if (listen === true) {
      const { max: _max, idleTimeoutMillis: _idle, ...clientConfig } = baseConfig as pg.PoolConfig;
      this.listenConfig = clientConfig;
    } else {
      this.listenConfig = typeof listen === 'string' ? { connectionString: listen } : listen;
    }
    if ((options.autorun ?? true) === true) this.run();
  }

  /** Whether wake-ups currently arrive by LISTEN (otherwise the worker polls). */
  get listening(): boolean {
    return this.isListening;
  }

  /** Handlers running now. */
  get running(): number {
    return this.active.size;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.closing;
  }

  /**
   * Resolves once the worker has set up its wake-ups: LISTEN checked (then `listening` is
   * true), or polling chosen.  Rejects when the queue does not exist (unless `waitForQueue`):
   * the worker has stopped.
   */
  waitUntilReady(): Promise<void> {
    return this.ready;
  }

  /** Starts the worker (done by the constructor unless `autorun: false`). */
  run(): void {
    if (this.started || this.closing) return;
    this.started = true;
    this.loopDone = this.startOnceTheQueueExists();
  }

  /**
   * Looks the queue up first: a worker of a queue that does not exist stops with one clear
   * error rather than failing every claim (which flooded the server's log), or, with
   * `waitForQueue`, waits until it exists.  Then sets up wake-ups and heartbeats and claims.
   */
  private async startOnceTheQueueExists(): Promise<void> {
    for (let streak = 0; this.queueId === null; streak++) {
      if (this.closing) return;
      try {
        this.queueId = (await this.pool.query<{ id: string }>(QUEUE_ID_SQL, [this.queue])).rows[0]?.id ?? null;
      } catch (err) {
        const missing = (err as { code?: unknown }).code === UNDEFINED_OBJECT;
        if (missing && !this.waitForQueue) {
          const error = new Error(
            `queue '${this.queue}' does not exist: the worker stops (create it with job.create_queue, or pass waitForQueue: true to wait for it)`,
            { cause: err },
          );
          this.reportError(error);
          this.readyReject(error);
          void this.close();
          return;
        }
        // Waiting for the queue, say so once; other errors (the database is unreachable)
        // each time, as claims do.
        if (!missing || streak === 0) this.reportError(err);
        this.wake.clear();
        await this.wake.wait(retryDelayMs(streak));
      }
    }
    if (this.closing) return;
    if (this.listenConfig) {
      void this.connectListener();
    } else {
      this.readyResolve();
    }
    if (this.heartbeat !== false) {
      this.heartbeatTimer = setInterval(() => void this.beat(), this.heartbeat);
    }
    await this.loop();
  }

  /**
   * Stops claiming, waits up to `gracePeriod` for running handlers, hands back claimed jobs it
   * has not started (`job.release`: no attempt spent), records handlers still running after
   * the grace period as transient failures, and closes its connections (not a pool you passed).
   */
  close(options: CloseOptions = {}): Promise<void> {
    if (!this.closePromise) this.closePromise = this.shutdown(options.gracePeriod ?? 25_000);
    return this.closePromise;
  }

  // -------------------------------------------------------------------------------------------
  // The claim loop

  private async loop(): Promise<void> {
    let errorStreak = 0;
    let emptyStreak = 0;
    let worked = false;
    while (!this.closing) {
      const free = this.concurrency - this.active.size;
      if (free <= 0) {
        this.wake.clear();
        if (this.concurrency - this.active.size <= 0) await this.wake.wait(this.maxListenWait);
        // The jobs of one completion batch free their slots in the same turn of the event
        // loop: let them all, so the next claim is one batch rather than several small ones.
        await new Promise<void>((resolve) => setImmediate(resolve));
        continue;
      }
      this.wake.clear();
      const sentAt = performance.now();
      let rows: ClaimRow[];
      try {
        const n = Math.min(free, this.batch);
        rows = (await this.pool.query<ClaimRow>(DEQUEUE_SQL, [this.queue, this.name, n, this.leaseInterval])).rows;
        errorStreak = 0;
      } catch (err) {
        errorStreak++;
        this.reportError(err);
        this.wake.clear();
        await this.wake.wait(retryDelayMs(errorStreak));
        continue;
      }
      if (this.closing) {
        await this.releaseRows(rows);
        break;
      }
      if (rows.length > 0) {
        emptyStreak = 0;
        worked = true;
        for (const row of rows) this.start(row, sentAt);
        continue;
      }
      // Only after a dequeue that found nothing: that one marked this consumer as waiting, so
      // a producer's commit will notify (a short batch would not have).
      if (worked) {
        worked = false;
        this.safeEmit('drained');
      }
      await this.idle(emptyStreak++);
    }
  }

  private async idle(emptyStreak: number): Promise<void> {
    let ms = this.isListening ? this.maxListenWait : this.pollInterval;
    try {
      const due = (await this.pool.query<{ ms: number | null }>(NEXT_DUE_SQL, [this.queue])).rows[0]?.ms;
      if (due !== null && due !== undefined) {
        // Something is due now but the dequeue found nothing (claimed by a concurrent
        // dequeue, say): look again soon, backing off while that lasts.
        const floor = Math.min(10 * 2 ** Math.min(emptyStreak, 10), ms);
        ms = Math.min(ms, Math.max(Math.ceil(due), floor));
      }
    } catch (err) {
      this.reportError(err);
    }
    if (!this.closing) await this.wake.wait(ms);
  }

  private start(row: ClaimRow, sentAt: number): void {
    this.stats.claimed++;
    const abort = new AbortController();
    const job = new JobImpl<P>(
      row.id,
      row.queue,
      row.job_type,
      row.payload as P,
      row.attempt,
      row.max_retries,
      row.enqueued_at,
      row.lease_expires_at,
      row.lease_token,
      this.name,
      abort.signal,
    );
    const entry: Entry<P> = {
      job,
      abort,
      renewedAt: sentAt,
      lost: false,
      abandoned: false,
      settling: false,
      done: Promise.resolve(),
    };
    // Keyed by claim: a job this worker lost and then claimed again is two entries.
    const key = claimKey(job.id, job.token);
    this.active.set(key, entry);
    entry.done = this.runJob(entry)
      .catch((err) => this.reportError(err))
      .finally(() => {
        this.active.delete(key);
        this.wake.notify();
      });
  }

  private async runJob(entry: Entry<P>): Promise<void> {
    const job = entry.job;
    this.safeEmit('active', job);
    let ok = false;
    let result: R | undefined;
    let json: string | null = null;
    let thrown: unknown;
    try {
      result = await this.handler(job);
      json = toJson(result);
      ok = true;
    } catch (err) {
      thrown = err;
    }
    entry.settling = true;
    if (entry.lost || entry.abandoned) return;
    if (ok) {
      let held: boolean | undefined;
      try {
        held = await this.retrying(entry, () => this.complete(entry, json));
      } catch (err) {
        // The result cannot be stored (a NUL character in a string, say): record that instead.
        ok = false;
        thrown = new Error(`the handler's result could not be stored: ${asError(err).message}`, { cause: err });
      }
      if (ok) {
        if (held === undefined) return;
        if (held) {
          this.stats.completed++;
          this.safeEmit('completed', job, result as R);
        } else {
          this.markLost(entry, 'complete');
        }
        return;
      }
    }
    let state: string | null | undefined;
    try {
      state = await this.retrying(entry, () => this.fail(entry, thrown));
    } catch (err) {
      this.reportError(err);
      return;
    }
    if (state === undefined) return;
    if (state === null) {
      this.markLost(entry, 'fail');
    } else {
      this.stats.failed++;
      this.safeEmit('failed', job, thrown, state);
    }
  }

  /**
   * Runs a completion or a failure, retrying connection problems a few times while the lease
   * is still renewed; undefined when it never got through (the lease then runs out and the job
   * is taken back and retried).  Errors in the data itself (SQLSTATE class 22) are thrown.
   */
  private async retrying<T>(entry: Entry<P>, op: () => Promise<T>): Promise<T | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await op();
      } catch (err) {
        const code = (err as { code?: unknown }).code;
        if (typeof code === 'string' && code.startsWith('22')) throw err;
        this.reportError(err);
        if (attempt >= 3 || entry.lost || entry.abandoned || this.poolEnded) return undefined;
        await sleep(250 * 4 ** attempt);
      }
    }
  }

  private safeEmit<K extends keyof WorkerEvents<P, R>>(event: K, ...args: WorkerEvents<P, R>[K]): void {
    try {
      // biome-ignore lint/suspicious/noExplicitAny: the tuple type is checked by the signature
      (this.emit as any)(event, ...args);
    } catch (err) {
      // A listener threw: report it and carry on working.
      this.reportError(err);
    }
  }

  private markLost(entry: Entry<P>, reason: LostReason): void {
    if (entry.lost) return;
    entry.lost = true;
    this.stats.lost++;
    entry.abort.abort(
      new LeaseLostError(
        `job ${entry.job.id}: this worker no longer holds it (its lease ran out and it was taken back, or it was cancelled)`,
      ),
    );
    this.safeEmit('lost', entry.job, reason);
  }

  // -------------------------------------------------------------------------------------------
  // Recording outcomes

  /** Batches the completions of one turn of the event loop into one statement. */
  private complete(entry: Entry<P>, json: string | null): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      this.acks.push({ entry: entry as Entry<unknown>, result: json, resolve, reject });
      if (!this.ackScheduled) {
        this.ackScheduled = true;
        setImmediate(() => void this.flushAcks());
      }
    });
  }

  private flushAcks(): void {
    this.ackScheduled = false;
    const batch = this.acks;
    this.acks = [];
    // Handlers that returned nothing: one complete_many (what a hand-written loop would do).
    // Those with a result: job.complete per job, in one statement.
    const bare = batch.filter((p) => p.result === null);
    const withResult = batch.filter((p) => p.result !== null);
    if (bare.length > 1) {
      void this.completeBare(bare);
    } else {
      withResult.push(...bare);
    }
    if (withResult.length > 0) void this.completeEach(withResult);
  }

  /**
   * complete_many only says how many it completed.  When that is not all of them (some claim
   * was lost), the statement fails on purpose, so that nothing of it is recorded, and the jobs
   * go through job.complete one by one, which says which.
   */
  private async completeBare(batch: Pending[]): Promise<void> {
    try {
      await this.pool.query(COMPLETE_ALL_OR_NONE_SQL, [
        batch.map((p) => p.entry.job.id),
        batch.map((p) => p.entry.job.token),
        batch.length,
      ]);
      for (const p of batch) p.resolve(true);
    } catch (err) {
      if (isNotAllCompleted(err)) {
        await this.completeEach(batch);
      } else {
        for (const p of batch) p.reject(err);
      }
    }
  }

  private async completeEach(batch: Pending[]): Promise<void> {
    if (batch.length === 1) {
      const p = batch[0] as Pending;
      try {
        const rows = (
          await this.pool.query<{ ok: boolean }>(COMPLETE_ONE_SQL, [p.entry.job.id, p.result, p.entry.job.token])
        ).rows;
        p.resolve(rows[0]?.ok === true);
      } catch (err) {
        p.reject(err);
      }
      return;
    }
    try {
      const rows = (
        await this.pool.query<{ ok: boolean }>(COMPLETE_EACH_SQL, [
          batch.map((p) => p.entry.job.id),
          batch.map((p) => p.result),
          batch.map((p) => p.entry.job.token),
        ])
      ).rows;
      batch.forEach((p, i) => {
        p.resolve(rows[i]?.ok === true);
      });
    } catch (err) {
      // One statement is one transaction: nothing of it was recorded.  Each job's own retry
      // then goes alone.
      for (const p of batch) p.reject(err);
    }
  }

  /** Records a failed attempt; the job's new state, or null when the claim is no longer held. */
  private async fail(entry: Entry<P>, thrown: unknown): Promise<string | null> {
    const d = failureDetails(thrown);
    const rows = (
      await this.pool.query<{ state: string | null }>(FAIL_SQL, [
        entry.job.id,
        withoutNul(d.error),
        d.permanent,
        d.httpStatus,
        d.retryAfterSeconds === null ? null : `${d.retryAfterSeconds} seconds`,
        entry.job.token,
      ])
    ).rows;
    return rows[0]?.state ?? null;
  }

  private async releaseRows(rows: ClaimRow[]): Promise<void> {
    if (rows.length === 0) return;
    try {
      const result = await this.pool.query<{ id: string; ok: boolean }>(RELEASE_SQL, [
        rows.map((r) => r.id),
        rows.map((r) => r.lease_token),
      ]);
      const byId = new Map(rows.map((r) => [r.id, r]));
      for (const r of result.rows) {
        const row = byId.get(r.id);
        if (!r.ok || !row) continue;
        this.stats.released++;
        const abort = new AbortController();
        this.safeEmit(
          'released',
          new JobImpl<P>(
            row.id,
            row.queue,
            row.job_type,
            row.payload as P,
            row.attempt,
            row.max_retries,
            row.enqueued_at,
            row.lease_expires_at,
            row.lease_token,
            this.name,
            abort.signal,
          ),
        );
      }
    } catch (err) {
      // Not handed back: their leases run out and the jobs are taken back as stalled.
      this.reportError(err);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Leases

  private async beat(): Promise<void> {
    if (this.beating || this.heartbeat === false) return;
    const now = performance.now();
    const due = [...this.active.values()].filter(
      (e) => !e.lost && !e.abandoned && now - e.renewedAt >= (this.heartbeat as number) / 2,
    );
    if (due.length === 0) return;
    this.beating = true;
    try {
      const rows = (
        await this.pool.query<{ id: string; token: string; held: boolean; lease_expires_at: Date | null }>(
          HEARTBEAT_SQL,
          [due.map((e) => e.job.id), due.map((e) => e.job.token), this.leaseInterval],
        )
      ).rows;
      for (const row of rows) {
        const entry = this.active.get(claimKey(row.id, row.token));
        if (!entry) continue;
        if (row.held) {
          entry.renewedAt = now;
          if (row.lease_expires_at) entry.job.leaseExpiresAt = row.lease_expires_at;
        } else if (!entry.settling) {
          // A job being completed right now may just have finished: its own call tells.
          this.markLost(entry, 'heartbeat');
        }
      }
    } catch (err) {
      this.reportError(err);
    } finally {
      this.beating = false;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Wake-ups

  private async connectListener(): Promise<void> {
    if (this.closing || !this.listenConfig) return;
    // TCP keepalives: an idle LISTEN connection is otherwise the last to notice a dead peer.
    const client = new pg.Client({ application_name: 'pg-jobqueue listener', keepAlive: true, ...this.listenConfig });
    this.listenClient = client;
    let failed = false;
    const lose = (err: unknown) => {
      if (failed) return;
      failed = true;
      if (this.listenClient === client) this.listenClient = null;
      this.setListening(false);
      client.removeAllListeners('notification');
      client.end().catch(() => undefined);
      if (this.closing) return;
      this.reportError(err);
      this.listenBackoff = Math.min(30_000, Math.max(1_000, this.listenBackoff * 2));
      this.listenTimer = setTimeout(() => void this.connectListener(), this.listenBackoff);
    };
    client.on('error', lose);
    client.on('end', () => lose(new Error('the LISTEN connection closed')));
    client.on('notification', (msg) => {
      if (msg.channel !== CHANNEL) return;
      if (this.probe && msg.payload === this.probe.payload) {
        this.probe.resolve();
      } else if (msg.payload === this.queueId) {
        this.wake.notify();
      }
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
      // Through PgBouncer in transaction pooling, LISTEN succeeds and never hears anything:
      // notify ourselves from another connection and see whether it arrives.
      const payload = `${PROBE_PREFIX}${randomUUID()}`;
      const heard = new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), this.listenProbeTimeout);
        this.probe = {
          payload,
          resolve: () => {
            clearTimeout(timer);
            resolve(true);
          },
        };
      });
      await this.pool.query('SELECT pg_notify($1::text, $2::text)', [CHANNEL, payload]);
      const ok = await heard;
      this.probe = null;
      if (failed || this.closing) return;
      if (ok) {
        this.listenBackoff = 0;
        this.setListening(true);
        // Look once more now that notifications arrive: one that came before LISTEN is lost.
        this.wake.notify();
      } else {
        failed = true;
        this.listenClient = null;
        client.removeAllListeners();
        client.on('error', () => undefined);
        client.end().catch(() => undefined);
        this.reportError(
          new Error(
            `LISTEN ${CHANNEL} heard nothing within ${this.listenProbeTimeout} ms (a transaction-pooling PgBouncer?): polling every ${this.pollInterval} ms at most; pass listen: <direct connection> to LISTEN past the pooler, or listen: false`,
          ),
        );
      }
    } catch (err) {
      this.probe = null;
      lose(err);
    } finally {
      this.readyResolve();
    }
  }

  private setListening(on: boolean): void {
    if (this.isListening === on) return;
    this.isListening = on;
    this.safeEmit('listening', on);
  }

  // -------------------------------------------------------------------------------------------
  // Shutting down

  private async shutdown(gracePeriod: number): Promise<void> {
    this.closing = true;
    this.wake.notify();
    await this.loopDone;
    if (this.active.size > 0) {
      const all = Promise.all([...this.active.values()].map((e) => e.done));
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([all, new Promise<void>((r) => (timer = setTimeout(r, Math.max(0, gracePeriod))))]);
      clearTimeout(timer);
    }
    // Past the grace period: stop the stragglers and record their attempts as failed.  Lost
    // jobs whose handlers still run are left to them: nothing of theirs is recorded anyway.
    const stragglers = [...this.active.values()].filter((e) => !e.settling && !e.lost);
    for (const e of this.active.values()) {
      if (e.lost && !e.settling) e.abandoned = true;
    }
    for (const e of stragglers) {
      e.abandoned = true;
      e.abort.abort(new WorkerClosingError(`the worker closed before job ${e.job.id} finished`));
    }
    await Promise.all(
      stragglers.map(async (e) => {
        try {
          const state = await this.fail(
            e,
            new WorkerClosingError(`the worker closed before the handler finished (grace period ${gracePeriod} ms)`),
          );
          if (state === null) {
            this.markLost(e, 'fail');
          } else {
            this.stats.failed++;
            this.safeEmit(
              'failed',
              e.job,
              new WorkerClosingError('the worker closed before the handler finished'),
              state,
            );
          }
        } catch (err) {
          this.reportError(err);
        }
      }),
    );
    // Outcomes being recorded finish (each is bounded by its retries).
    await Promise.all([...this.active.values()].filter((e) => e.settling && !e.abandoned).map((e) => e.done));
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    if (this.listenTimer) clearTimeout(this.listenTimer);
    const client = this.listenClient;
    this.listenClient = null;
    this.setListening(false);
    if (client) {
      client.removeAllListeners();
      client.on('error', () => undefined);
      await client.end().catch(() => undefined);
    }
    this.poolEnded = true;
    if (this.ownsPool) await this.pool.end().catch(() => undefined);
    this.readyResolve();
    this.safeEmit('closed');
  }

  private reportError(err: unknown): void {
    const error = asError(err);
    if (this.listenerCount('error') > 0) {
      try {
        this.emit('error', error);
      } catch (listenerError) {
        console.error(`pg-jobqueue worker ${this.name}: an 'error' listener threw:`, listenerError);
      }
    } else {
      console.error(`pg-jobqueue worker ${this.name} (queue ${this.queue}):`, error);
    }
  }
}
