// What the README's examples take from the application around them, declared so that each
// example compiles on its own (test/types.test.mjs imports the names an example uses but does
// not define).  Only types: nothing here runs.
import type pg from 'pg';
import type { Worker } from 'pg-jobqueue';

export declare function sendEmail(
  email: { template: string; orderId: number },
  opts: { signal: AbortSignal },
): Promise<{ messageId: string }>;
export declare const client: pg.PoolClient;
export declare const pool: pg.Pool;
export declare const emailWorker: Worker;
export declare const billingWorker: Worker;
export declare function handler(job: unknown): Promise<void>;
export declare const bouncerUrl: string;
export declare const rows: { row: number }[];
export declare const PROVIDER_URL: string;

interface PrismaTransaction {
  order: { create(args: { data: { customer: string } }): Promise<{ id: number }> };
  $queryRawUnsafe(query: string, ...values: unknown[]): Promise<unknown[]>;
  $queryRaw(query: TemplateStringsArray, ...values: unknown[]): Promise<unknown[]>;
}
export declare const prisma: { $transaction<T>(fn: (tx: PrismaTransaction) => Promise<T>): Promise<T> };

interface DrizzleTransaction {
  insert(table: unknown): { values(row: object): Promise<void> };
  execute(query: unknown): Promise<{ rows: unknown[] }>;
}
export declare const db: { transaction<T>(fn: (tx: DrizzleTransaction) => Promise<T>): Promise<T> };
export declare const orders: unknown;

interface KnexTransaction {
  (table: string): { insert(row: object): Promise<void> };
  raw(sql: string, bindings: readonly unknown[]): Promise<{ rows: unknown[] }>;
}
export declare const knex: { transaction<T>(fn: (trx: KnexTransaction) => Promise<T>): Promise<T> };
