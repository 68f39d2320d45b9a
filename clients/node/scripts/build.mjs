// Builds dist/esm (ES modules) and dist/cjs (CommonJS), each with its type declarations.
// Run by `npm run build`, by `prepare` (npm install / npm ci in this directory, or installing
// the package from a folder or git) and before the tests.  Writes only under dist/.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(root, 'package.json'));
let tsc;
try {
  tsc = require.resolve('typescript/bin/tsc');
} catch {
  // Installed without its dev dependencies (a folder dependency of another project): use the
  // build that is there, if any.
  if (existsSync(join(root, 'dist/esm/index.js')) && existsSync(join(root, 'dist/cjs/index.js'))) {
    console.log('pg-jobqueue: typescript is not installed here; keeping the existing dist/');
    process.exit(0);
  }
  console.error(
    'pg-jobqueue: cannot build: typescript is not installed here. Run `npm ci` in clients/node first, or ' +
      'install a tarball made there with `npm pack` (see clients/node/README.md, "Installing").',
  );
  process.exit(1);
}
rmSync(join(root, 'dist'), { recursive: true, force: true });
for (const config of ['tsconfig.json', 'tsconfig.cjs.json']) {
  execFileSync(process.execPath, [tsc, '-p', join(root, config)], { stdio: 'inherit', cwd: root });
}
// The package is "type": "module"; the CommonJS build says so for its own directory.
mkdirSync(join(root, 'dist/cjs'), { recursive: true });
writeFileSync(join(root, 'dist/cjs/package.json'), '{ "type": "commonjs" }\n');
