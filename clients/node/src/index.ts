export {
  errorText,
  type FailureDetails,
  failureDetails,
  LeaseLostError,
  PermanentError,
  parseRetryAfter,
  WorkerClosingError,
} from './errors.js';
export type { JsonObject, JsonPayload, JsonSafe, NotArray } from './json.js';
export {
  type EnqueueManyOptions,
  type EnqueueOptions,
  enqueue,
  enqueueMany,
  type RateLimitPauseOptions,
  rateLimitPause,
} from './producer.js';
export type { Queryable } from './sql.js';
export {
  CHANNEL,
  type CloseOptions,
  type Connection,
  type Handler,
  type Job,
  type LostReason,
  Worker,
  type WorkerEvents,
  type WorkerOptions,
  type WorkerStats,
} from './worker.js';
