// `npm ci` / `npm install` build the CLI into dist/ (bin/petserve.js imports it).
// Under `--dry-run` npm still runs this script but installs nothing, so tsc is
// not there to run: nothing is built then, and a real install still fails on
// any build error.
import { spawnSync } from 'node:child_process';

if (process.env.npm_config_dry_run === 'true') {
  console.log('prepare: dry run, nothing installed, nothing built');
  process.exit(0);
}
const r = spawnSync('npm', ['run', 'build'], { stdio: 'inherit' });
process.exit(r.status ?? 1);
