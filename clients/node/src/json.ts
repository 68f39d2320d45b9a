/** A job's payload when no type is given: a JSON object (the extension refuses anything else). */
export type JsonObject = { [key: string]: unknown };

type JsonPrimitive = string | number | boolean | null;

/** What `JSON.stringify` drops, turns into something else, or cannot write. */
type NotJson = undefined | bigint | symbol | Date | ((...args: never[]) => unknown);

/**
 * `T` with every value that would not survive a trip through `jsonb` mapped to `never`:
 * `Date` (it comes back a string), `undefined` (the key disappears), functions, bigints and
 * symbols.  Optional properties may be left out.  `any` and `unknown` pass, so loosely typed
 * data (`JSON.parse`, `JsonObject`) is accepted as before.
 */
export type JsonSafe<T> = 0 extends 1 & T
  ? T
  : unknown extends T
    ? T
    : T extends JsonPrimitive
      ? T
      : T extends NotJson
        ? never
        : T extends readonly (infer E)[]
          ? readonly JsonSafe<E>[]
          : T extends object
            ? { [K in keyof T]: JsonSafe<T[K]> }
            : never;

/**
 * The constraint on a payload type `P` (`enqueue<P>`, `Worker<P>`): an object, type or
 * interface, whose values are all JSON-safe (see {@link JsonSafe}).  Written as a mapped type
 * over `P` rather than an index signature so that interfaces, which have none, fit.
 */
export type JsonPayload<P> = object & { [K in keyof P]: JsonSafe<P[K]> };

/** `P`, unless it is an array (the extension takes only objects as payloads). */
export type NotArray<P> = P extends readonly unknown[] ? never : P;
