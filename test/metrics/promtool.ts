import { spawnSync } from 'node:child_process';

/**
 * `promtool` (Debian package `prometheus`, installed by scripts/setup-system.sh)
 * is the reference parser and linter for the exposition format and for
 * prometheus.yml. Tests that need it fail, rather than skip, when it is missing:
 * CI runs setup-system.sh, so a missing promtool is a broken setup, and a
 * skipped check would pass silently.
 */
export function promtool(args: string[], input?: string): { status: number; output: string } {
  const r = spawnSync('promtool', args, { input, encoding: 'utf8', timeout: 60_000 });
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    throw new Error(
      code === 'ENOENT'
        ? 'promtool not found: install the Debian package `prometheus` (sudo bash scripts/setup-system.sh)'
        : `promtool failed to start: ${r.error.message}`,
    );
  }
  return { status: r.status ?? -1, output: `${r.stdout}${r.stderr}` };
}
