import { readFileSync } from 'node:fs';

export const SERVER_NAME = 'petserve';

/** package.json's version; src/server and dist/server both sit two levels below it. */
export const SERVER_VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
})();
