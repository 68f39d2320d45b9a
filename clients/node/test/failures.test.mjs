import assert from 'node:assert/strict';
import { test } from 'node:test';
import { enqueue, failureDetails, PermanentError, parseRetryAfter, Worker } from 'pg-jobqueue';
import { collectErrors, testDatabase, waitFor } from './helpers.mjs';

class HttpError extends Error {
  constructor(status, message, extra = {}) {
    super(message);
    this.status = status;
    Object.assign(this, extra);
  }
}

async function jobRow(db, id) {
  const { rows } = await db.query(
    'SELECT state, attempt, errors, result, run_at, claimed_at FROM job.jobs WHERE id = $1::bigint',
    [id],
  );
  return rows[0];
}

test('a 503 is retried with backoff, then dead once the retries are used up', { timeout: 60_000 }, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  // No jitter, so the backoff is exact: 200 ms, 400 ms, 800 ms.
  await db.query(
    "SELECT job.create_queue('flaky', max_retries => 3, backoff_base => '200 milliseconds', backoff_max => '10 seconds', jitter => 0)",
  );
  const id = await enqueue(db, 'flaky', { to: 'ada' });
  const states = [];
  const worker = new Worker(
    'flaky',
    async () => {
      throw new HttpError(503, 'upstream unavailable');
    },
    { connection: url },
  );
  const errors = collectErrors(worker);
  onCleanup(() => worker.close());
  worker.on('failed', (job, err, state) => states.push([job.attempt, err.status, state]));
  await waitFor(() => states.length === 4, { what: 'four failed attempts' });
  await worker.close();

  assert.deepEqual(states, [
    [1, 503, 'scheduled'],
    [2, 503, 'scheduled'],
    [3, 503, 'scheduled'],
    [4, 503, 'dead'],
  ]);
  const row = await jobRow(db, id);
  assert.equal(row.state, 'dead');
  assert.equal(row.attempt, 4);
  assert.equal(row.errors.length, 4);
  for (const [i, e] of row.errors.entries()) {
    assert.equal(e.attempt, i + 1);
    assert.equal(e.http_status, 503);
    assert.equal(e.permanent, false);
    assert.match(e.error, /upstream unavailable/);
    assert.match(e.error, /failures\.test\.mjs/, 'the stack is kept');
  }
  const at = row.errors.map((e) => Date.parse(e.at));
  for (const [k, backoff] of [200, 400, 800].entries()) {
    assert.ok(at[k + 1] - at[k] >= backoff, `attempt ${k + 2} waited ${at[k + 1] - at[k]} ms >= ${backoff} ms`);
  }
  assert.deepEqual(errors, []);
});

test('a 404, a PermanentError and permanent: true go dead at once', { timeout: 60_000 }, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('strict', max_retries => 5)");
  const ids = {
    notFound: await enqueue(db, 'strict', { kind: 'notFound' }),
    permanentError: await enqueue(db, 'strict', { kind: 'permanentError' }),
    flagged: await enqueue(db, 'strict', { kind: 'flagged' }),
    statusCode: await enqueue(db, 'strict', { kind: 'statusCode' }),
  };
  const failed = new Map();
  const worker = new Worker(
    'strict',
    async (job) => {
      switch (job.payload.kind) {
        case 'notFound':
          throw new HttpError(404, 'no such mailbox');
        case 'permanentError':
          throw new PermanentError('bad template');
        case 'flagged':
          throw Object.assign(new Error('flagged'), { permanent: true });
        default:
          // axios-style: err.response.status
          throw Object.assign(new Error('gone'), { response: { status: 422, headers: {} } });
      }
    },
    { connection: url, concurrency: 4 },
  );
  const errors = collectErrors(worker);
  onCleanup(() => worker.close());
  worker.on('failed', (job, _err, state) => failed.set(job.id, state));
  await waitFor(() => failed.size === 4, { what: 'four failures' });
  await worker.close();

  for (const id of Object.values(ids)) assert.equal(failed.get(id), 'dead');
  const notFound = await jobRow(db, ids.notFound);
  assert.equal(notFound.state, 'dead');
  assert.equal(notFound.attempt, 1);
  assert.equal(notFound.errors[0].http_status, 404);
  assert.equal(notFound.errors[0].permanent, true);
  const pe = await jobRow(db, ids.permanentError);
  assert.equal(pe.errors[0].permanent, true);
  assert.match(pe.errors[0].error, /PermanentError: bad template/);
  assert.equal((await jobRow(db, ids.flagged)).errors[0].permanent, true);
  assert.equal((await jobRow(db, ids.statusCode)).errors[0].http_status, 422);
  assert.deepEqual(errors, []);
});

test('a Retry-After replaces the backoff; a thrown non-Error is recorded too', { timeout: 60_000 }, async (t) => {
  const { url, db, onCleanup } = await testDatabase(t);
  await db.query("SELECT job.create_queue('limited', max_retries => 5, backoff_base => '30 seconds')");
  const headerId = await enqueue(db, 'limited', { kind: 'header' });
  const propId = await enqueue(db, 'limited', { kind: 'prop' });
  const stringId = await enqueue(db, 'limited', { kind: 'string' });
  const done = new Set();
  const worker = new Worker(
    'limited',
    async (job) => {
      if (job.attempt > 1) return { attempt: job.attempt };
      if (job.payload.kind === 'header') throw new HttpError(429, 'slow down', { headers: { 'Retry-After': '1' } });
      if (job.payload.kind === 'prop') throw new HttpError(503, 'later', { retryAfter: 1 });
      throw 'a string, not an Error';
    },
    { connection: url, concurrency: 3 },
  );
  const errors = collectErrors(worker);
  onCleanup(() => worker.close());
  worker.on('completed', (job) => done.add(job.id));
  await waitFor(() => done.has(headerId) && done.has(propId), { what: 'the retried jobs' });
  await worker.close();
  for (const id of [headerId, propId]) {
    const row = await jobRow(db, id);
    assert.equal(row.state, 'completed');
    assert.equal(row.attempt, 2);
    const waited = row.run_at - Date.parse(row.errors[0].at);
    assert.ok(waited >= 950 && waited < 5_000, `Retry-After 1 s, waited ${waited} ms (backoff would be 30 s)`);
  }
  const s = await jobRow(db, stringId);
  assert.equal(s.state, 'scheduled');
  assert.equal(s.errors[0].error, 'a string, not an Error');
  assert.deepEqual(errors, []);
});

test('failureDetails maps status, Retry-After and permanence', () => {
  const now = Date.parse('2030-01-01T00:00:00Z');
  assert.equal(parseRetryAfter('120', now), 120);
  assert.equal(parseRetryAfter(2.5, now), 2.5);
  assert.equal(parseRetryAfter('Tue, 01 Jan 2030 00:01:00 GMT', now), 60);
  assert.equal(parseRetryAfter('Mon, 31 Dec 2029 00:00:00 GMT', now), 0, 'a past date: at once');
  assert.equal(parseRetryAfter('soon', now), null);
  assert.equal(parseRetryAfter(undefined, now), null);

  const fetchLike = Object.assign(new Error('rate limited'), {
    status: 429,
    headers: new Headers({ 'retry-after': '7' }),
  });
  assert.deepEqual(
    { ...failureDetails(fetchLike), error: undefined },
    { error: undefined, permanent: false, httpStatus: 429, retryAfterSeconds: 7 },
  );
  const axiosLike = Object.assign(new Error('x'), { response: { status: 503, headers: { 'retry-after': '3' } } });
  assert.equal(failureDetails(axiosLike).httpStatus, 503);
  assert.equal(failureDetails(axiosLike).retryAfterSeconds, 3);
  assert.equal(failureDetails(Object.assign(new Error('x'), { statusCode: 404 })).httpStatus, 404);
  assert.equal(failureDetails(Object.assign(new Error('x'), { status: 42 })).httpStatus, null, 'not an HTTP status');
  assert.equal(failureDetails(Object.assign(new Error('x'), { status: 600 })).httpStatus, null);
  assert.equal(failureDetails(Object.assign(new Error('x'), { code: 'ECONNRESET' })).httpStatus, null);
  assert.equal(failureDetails(new PermanentError('no')).permanent, true);
  const unrecoverable = new Error('bullmq style');
  unrecoverable.name = 'UnrecoverableError';
  assert.equal(failureDetails(unrecoverable).permanent, true);
  assert.equal(failureDetails(null).error, 'null');
  assert.equal(failureDetails({ reason: 'x' }).error, '{"reason":"x"}');
});
