// Typed payloads, as `tsc --strict` must see them (test/types.test.mjs compiles this file).
// Every `@ts-expect-error` line must be an error: tsc fails on one that no longer is.
import type pg from 'pg';
import { enqueue, enqueueMany, type Job, type JsonObject, Worker } from 'pg-jobqueue';

declare const client: pg.PoolClient;
const connection = 'postgresql:///app';

/** Exactly `T`: `expectType<string>(x)` fails when x is `any` or a wider type. */
declare function expectType<T>(value: T): <U extends T>(...check: T extends U ? [] : [never]) => void;

interface Email {
  to: string;
  cc?: string[];
  attempt: number;
  meta: { campaign: string | null; tags: readonly string[] };
}
type Invoice = { invoiceId: string; lines: { sku: string; cents: number }[] };
const email: Email = { to: 'ada@example.com', attempt: 1, meta: { campaign: null, tags: [] } };

// Interfaces and type aliases are payloads; optional properties may be left out.
expectType<string>(await enqueue(client, 'emails', email))();
await enqueue<Email>(client, 'emails', { to: 'ada@example.com', attempt: 1, meta: { campaign: 'x', tags: ['a'] } });
await enqueue<Invoice>(client, 'invoices', { invoiceId: 'i-1', lines: [{ sku: 'a', cents: 100 }] });
expectType<string[]>(await enqueueMany<Email>(client, 'emails', [email, email]))();

// Untyped code as before: object literals, JsonObject, anything JSON.parse returns, no payload.
await enqueue(client, 'emails', { template: 'confirmation', orderId: 1 });
const loose: JsonObject = { anything: new Date() };
await enqueue(client, 'emails', loose);
await enqueue(client, 'emails', JSON.parse('{}'));
await enqueue(client, 'emails');
await enqueue(client, 'emails', {}, { delay: '1 minute' });
await enqueueMany(client, 'imports', [{ row: 1 }, { row: 2, extra: 'x' }]);

// A typed worker: job.payload is the payload type, the events carry the result type.
const typed = new Worker<Email, { messageId: string }>(
  'emails',
  async (job) => {
    expectType<string>(job.payload.to)();
    expectType<string[] | undefined>(job.payload.cc)();
    expectType<string>(job.id)();
    return { messageId: `m-${job.payload.attempt}` };
  },
  { connection },
);
typed.on('completed', (job, result) => {
  expectType<Job<Email>>(job)();
  expectType<{ messageId: string }>(result)();
});
// Inferred from an annotated handler.
const inferred = new Worker('invoices', (job: Job<Invoice>) => job.payload.lines.length, { connection });
expectType<Worker<Invoice, number>>(inferred)();
// Untyped: the payload is a JsonObject, as before.
new Worker(
  'emails',
  async (job) => {
    expectType<JsonObject>(job.payload)();
  },
  { connection },
);

// Values that would not come back from jsonb as they went in.
// @ts-expect-error a Date comes back as a string
await enqueue(client, 'emails', { at: new Date() });
// @ts-expect-error an undefined value: the key disappears
await enqueue(client, 'emails', { to: undefined });
declare const maybe: string | undefined;
// @ts-expect-error possibly undefined, in a required property
await enqueue(client, 'emails', { to: maybe });
// @ts-expect-error a function
await enqueue(client, 'emails', { send: () => 1 });
// @ts-expect-error a bigint (JSON.stringify throws)
await enqueue(client, 'emails', { id: 1n });
// @ts-expect-error deep inside
await enqueue(client, 'emails', { lines: [{ when: new Date() }] });
interface Scheduled {
  at: Date;
}
declare const scheduled: Scheduled;
// @ts-expect-error an interface with a Date
await enqueue(client, 'emails', scheduled);
// @ts-expect-error a worker of Date payloads would get strings
new Worker<Scheduled>('emails', async (job) => job.payload.at, { connection });
// @ts-expect-error not an object
await enqueue(client, 'emails', [1, 2]);
// @ts-expect-error not an object
await enqueue(client, 'emails', 'hello');
// @ts-expect-error one payload in the list is not JSON-safe
await enqueueMany(client, 'emails', [{ n: 1 }, { n: new Date() }]);

// The payload type ties producer and worker together.
// @ts-expect-error `to` is missing
await enqueue<Email>(client, 'emails', { attempt: 1, meta: { campaign: null, tags: [] } });
// @ts-expect-error `attempt` is a number
await enqueue<Email>(client, 'emails', { ...email, attempt: '1' });
new Worker<Email>(
  'emails',
  // @ts-expect-error no such property
  async (job) => job.payload.subject,
  { connection },
);
// @ts-expect-error the connection is required and a string, not string | undefined
new Worker('emails', async () => {}, { connection: process.env.DATABASE_URL });
