/**
 * Throw this (or any error with `permanent: true`) from a handler to send the job straight to
 * the dead-letter queue, without retries.
 */
export class PermanentError extends Error {
  readonly permanent = true as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PermanentError';
  }
}

/** The reason a job's `signal` is aborted with when its lease was lost. */
export class LeaseLostError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LeaseLostError';
  }
}

/** The reason a job's `signal` is aborted with when the worker closes before it finished. */
export class WorkerClosingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WorkerClosingError';
  }
}

/** How a thrown value is recorded by `job.fail`. */
export interface FailureDetails {
  error: string;
  permanent: boolean;
  httpStatus: number | null;
  /** Seconds, or null to let the queue's backoff decide. */
  retryAfterSeconds: number | null;
}

// The extension refuses intervals over 100 years; a Retry-After that far out is nonsense anyway.
const MAX_RETRY_AFTER_SECONDS = 365 * 24 * 3600;

type Loose = Record<string, unknown>;

function asObject(value: unknown): Loose | null {
  return value !== null && (typeof value === 'object' || typeof value === 'function') ? (value as Loose) : null;
}

function httpStatusOf(err: Loose): number | null {
  const response = asObject(err.response);
  for (const candidate of [err.status, err.statusCode, response?.status, response?.statusCode]) {
    const n = typeof candidate === 'string' && /^\d+$/.test(candidate) ? Number(candidate) : candidate;
    if (typeof n === 'number' && Number.isInteger(n) && n >= 100 && n <= 599) return n;
  }
  return null;
}

function headerOf(headers: unknown, name: string): unknown {
  const h = asObject(headers);
  if (!h) return undefined;
  if (typeof h.get === 'function') {
    // fetch's Headers, a Map, axios' AxiosHeaders.
    const v = (h.get as (k: string) => unknown).call(h, name);
    if (v !== undefined && v !== null) return v;
  }
  for (const key of Object.keys(h)) {
    if (key.toLowerCase() === name) return h[key];
  }
  return undefined;
}

/** A Retry-After value in seconds: delta-seconds (number or digits) or an HTTP-date. */
export function parseRetryAfter(value: unknown, now: number = Date.now()): number | null {
  let v = value;
  if (Array.isArray(v)) v = v[0];
  let seconds: number | null = null;
  if (typeof v === 'number' && Number.isFinite(v)) {
    seconds = v;
  } else if (typeof v === 'string') {
    const s = v.trim();
    if (/^\d+(\.\d+)?$/.test(s)) {
      seconds = Number(s);
    } else if (s !== '') {
      const at = Date.parse(s);
      if (!Number.isNaN(at)) seconds = (at - now) / 1000;
    }
  } else if (v instanceof Date && !Number.isNaN(v.getTime())) {
    seconds = (v.getTime() - now) / 1000;
  }
  if (seconds === null) return null;
  return Math.min(Math.max(seconds, 0), MAX_RETRY_AFTER_SECONDS);
}

/** The error text kept in the job's `errors`: the message and the stack. */
export function errorText(thrown: unknown): string {
  if (thrown instanceof Error) {
    const head = `${thrown.name}: ${thrown.message}`;
    const stack = typeof thrown.stack === 'string' ? thrown.stack : '';
    return stack.includes(thrown.message) ? stack : stack ? `${head}\n${stack}` : head;
  }
  if (typeof thrown === 'string') return thrown;
  try {
    const json = JSON.stringify(thrown);
    if (json !== undefined) return json;
  } catch {
    // fall through
  }
  return String(thrown);
}

/**
 * Reads what `job.fail` needs from a thrown value: `status`/`statusCode` (or
 * `response.status`, as axios puts it) as http_status when in 100..599; `retryAfter` in
 * seconds, or a `retry-after` header in `headers` or `response.headers` (delta-seconds or
 * HTTP-date); `permanent === true`, a {@link PermanentError} or BullMQ's `UnrecoverableError`
 * as permanent.
 */
export function failureDetails(thrown: unknown): FailureDetails {
  const err = asObject(thrown);
  if (!err) {
    return { error: errorText(thrown), permanent: false, httpStatus: null, retryAfterSeconds: null };
  }
  const response = asObject(err.response);
  let retryAfter = parseRetryAfter(err.retryAfter);
  if (retryAfter === null) retryAfter = parseRetryAfter(headerOf(err.headers, 'retry-after'));
  if (retryAfter === null) retryAfter = parseRetryAfter(headerOf(response?.headers, 'retry-after'));
  const permanent = thrown instanceof PermanentError || err.permanent === true || err.name === 'UnrecoverableError';
  return {
    error: errorText(thrown),
    permanent,
    httpStatus: httpStatusOf(err),
    retryAfterSeconds: retryAfter,
  };
}
