// Runs one vitest suite (unit or e2e) and closes with `N passed, N failed` from its JSON report.
// Usage: node scripts/run-suite.mjs <unit|e2e>
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const SUITES = {
  unit: { config: 'vitest.config.ts', label: 'vitest (unit and component)' },
  e2e: { config: 'vitest.e2e.config.ts', label: 'Playwright e2e (Chromium)' },
};
const suite = SUITES[process.argv[2]];
if (!suite) {
  console.error(`usage: run-suite.mjs <${Object.keys(SUITES).join('|')}>`);
  process.exit(2);
}
const root = join(import.meta.dirname, '..');
const report = join(root, 'reports', `${process.argv[2]}.json`);
mkdirSync(join(root, 'reports'), { recursive: true });
const run = spawnSync(
  'npx',
  ['vitest', 'run', '--config', suite.config, '--reporter=default', '--reporter=json', `--outputFile.json=${report}`],
  { cwd: root, stdio: 'inherit' },
);
let passed = 0;
let failed = 0;
try {
  const result = JSON.parse(readFileSync(report, 'utf8'));
  passed = result.numPassedTests;
  failed = result.numFailedTests + (result.numRuntimeErrorTestSuites ?? 0);
} catch {
  failed = 1;
}
if (run.status !== 0 && failed === 0) failed = 1; // e.g. a suite that could not even load
console.log(`${suite.label}: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && run.status === 0 ? 0 : 1);
