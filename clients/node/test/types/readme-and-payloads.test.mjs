// Types, checked by the compiler: `tsc --strict --noEmit` on every TypeScript example of the
// README (each ```ts block becomes a file; what a fragment takes from the application around
// it comes from stubs.ts) and on payloads.ts (typed payloads, and `@ts-expect-error`
// lines that must stay errors).  Needs dist/ (its declarations are what users compile against).
// npm test runs it after the build and before the database tests, which it would slow down.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const types = join(root, 'test/types');
const generated = join(types, 'readme');

// Names an example may use without importing them, and where they come from.
const library = ['Worker', 'enqueue', 'enqueueMany', 'rateLimitPause'];
const stubs = [
  ...readFileSync(join(types, 'stubs.ts'), 'utf8').matchAll(/^export declare (?:const|function) (\w+)/gm),
].map((m) => m[1]);

/** The README's ```ts blocks, but those marked `ts signature` (call shapes, not code). */
export function readmeBlocks() {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  return [...readme.matchAll(/^```ts( signature)?\n([\s\S]*?)^```$/gm)].filter((m) => !m[1]).map((m) => m[2]);
}

function declares(code, name) {
  const declaration = new RegExp(`\\b(?:const|let|var|function|class|interface|type)\\s+${name}\\b`);
  const imported = new RegExp(`^import [^;]*\\b${name}\\b[^;]*from`, 'm');
  return declaration.test(code) || imported.test(code);
}

function uses(code, name) {
  return new RegExp(`(?<![.\\w'])${name}\\b`).test(code);
}

/** A block as a module: the imports it leaves out, then the block. */
function asModule(code) {
  const wanted = (names) => names.filter((n) => uses(code, n) && !declares(code, n));
  const head = [];
  const fromLibrary = wanted(library);
  if (fromLibrary.length > 0) head.push(`import { ${fromLibrary.join(', ')} } from 'pg-jobqueue';`);
  if (uses(code, 'pg') && !declares(code, 'pg')) head.push("import pg from 'pg';");
  const fromStubs = wanted(stubs);
  if (fromStubs.length > 0) head.push(`import { ${fromStubs.join(', ')} } from '../stubs.js';`);
  return `${head.join('\n')}\n${code}\nexport {};\n`;
}

test('the README examples and test/types/payloads.ts compile with tsc --strict', () => {
  const blocks = readmeBlocks();
  assert.ok(blocks.length >= 8, `expected the README's examples, found ${blocks.length} ts blocks`);
  rmSync(generated, { recursive: true, force: true });
  mkdirSync(generated);
  blocks.forEach((code, i) => {
    writeFileSync(join(generated, `example-${String(i + 1).padStart(2, '0')}.ts`), asModule(code));
  });
  const tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', join(types, 'tsconfig.json')], { cwd: root, encoding: 'utf8' });
  } catch (err) {
    assert.fail(
      `tsc --strict found errors (files in test/types/readme are the README's blocks, in order):\n${err.stdout}`,
    );
  }
});
