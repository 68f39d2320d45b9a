// The one function of drizzle-orm the README's Drizzle example uses (it is not a dependency).
declare module 'drizzle-orm' {
  export function sql(strings: TemplateStringsArray, ...values: unknown[]): unknown;
}
