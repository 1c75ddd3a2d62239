import { defineConfig } from 'vitest/config';

// End-to-end: a real `erigolem serve` and Debian's Chromium driven by playwright-core, one file at a time.
export default defineConfig({
  test: {
    environment: 'node',
    include: ['e2e/**/*.e2e.ts'],
    testTimeout: 90_000,
    hookTimeout: 90_000,
    fileParallelism: false,
  },
});
