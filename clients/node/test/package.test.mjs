import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import * as esm from 'pg-jobqueue';

test('the CommonJS build exports what the ES module build does', () => {
  const require = createRequire(import.meta.url);
  const cjs = require('pg-jobqueue');
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  assert.equal(typeof cjs.Worker, 'function');
  assert.equal(require.resolve('pg-jobqueue').endsWith('dist/cjs/index.js'), true);
  const version = require('pg-jobqueue/package.json').version;
  const cargo = readFileSync(new URL('../../../Cargo.toml', import.meta.url), 'utf8');
  const extension = cargo.match(/^version = "(.+)"$/m)[1];
  assert.equal(version, extension, "the package's version is the extension's");
});

test('worker options are checked', () => {
  const h = async () => {};
  assert.throws(() => new esm.Worker('', h, { connection: 'postgresql://x' }), TypeError);
  assert.throws(() => new esm.Worker('q', h, {}), /connection is required/);
  assert.throws(() => new esm.Worker('q', h, { connection: 'postgresql://x', concurrency: 0 }), /concurrency/);
  assert.throws(() => new esm.Worker('q', h, { connection: 'postgresql://x', lease: -1 }), /lease/);
  assert.throws(() => new esm.Worker('q', h, { connection: 'postgresql://x', name: 'a\nb' }), /name/);
  assert.throws(() => new esm.Worker('q', h, { connection: 'postgresql://x', name: 'x'.repeat(129) }), /name/);
});
