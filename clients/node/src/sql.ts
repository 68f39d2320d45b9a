/**
 * What the library needs of a database connection: node-postgres `Client`, `PoolClient` and
 * `Pool` all fit, and so does a small adapter around another library's transaction handle
 * (see the README: Prisma, Drizzle, Knex).  `query` may resolve to a node-postgres result
 * (`{ rows }`) or to the array of rows itself.
 */
export interface Queryable {
  // biome-ignore lint/suspicious/noExplicitAny: node-postgres and adapters type rows loosely
  query(text: string, values?: unknown[]): Promise<{ rows: any[] } | any[]>;
}

/** The rows of a query result, whichever shape the connection returns. */
export async function rowsOf<T>(db: Queryable, text: string, values: unknown[]): Promise<T[]> {
  // Never a `name:` (a named prepared statement): those break behind PgBouncer below 1.21.
  const result = await db.query(text, values);
  return (Array.isArray(result) ? result : result.rows) as T[];
}

/** A duration in milliseconds as a PostgreSQL interval literal, checked. */
export function msInterval(name: string, ms: number): string {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
    throw new TypeError(`${name} must be a finite number of milliseconds >= 0, got ${String(ms)}`);
  }
  return `${ms} milliseconds`;
}

/** A duration given as milliseconds (number) or as a PostgreSQL interval (string). */
export function intervalParam(name: string, value: number | string): string {
  if (typeof value === 'string') {
    if (value.trim() === '') throw new TypeError(`${name} must not be empty`);
    return value;
  }
  return msInterval(name, value);
}
