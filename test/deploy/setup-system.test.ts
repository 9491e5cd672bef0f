import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * scripts/apt-sources.sh derives the backports source from the system's own apt
 * sources (no mirror host is named in the scripts). These run its functions
 * against fixture apt directories; the installing part of setup-system.sh needs
 * root and the network, and .ci/run exercises it on every CI machine.
 */
function sourceOf(aptFiles: Record<string, string>, suite: string): { out: string; status: number | null } {
  const dir = mkdtempSync(join(tmpdir(), 'petserve-apt-'));
  mkdirSync(join(dir, 'sources.list.d'));
  for (const [name, text] of Object.entries(aptFiles)) writeFileSync(join(dir, name), text);
  const r = spawnSync('bash', ['-c', `. scripts/apt-sources.sh && debian_source_of "$1"`, 'test', suite], {
    env: { ...process.env, PETSERVE_APT_ETC: dir },
    encoding: 'utf8',
  });
  return { out: r.stdout.trim(), status: r.status };
}

const deb822 = `Types: deb
URIs: http://mirror.one/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/one.gpg

Types: deb
URIs: http://mirror.one/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/one.gpg
`;

describe('scripts/apt-sources.sh', () => {
  it('takes URIs and keyring of the deb822 stanza that carries the suite', () => {
    expect(sourceOf({ 'sources.list.d/debian.sources': deb822 }, 'bookworm')).toEqual({
      out: 'http://mirror.one/debian /usr/share/keyrings/one.gpg',
      status: 0,
    });
    expect(sourceOf({ 'sources.list.d/debian.sources': deb822 }, 'bookworm-security').out).toBe(
      'http://mirror.one/debian-security /usr/share/keyrings/one.gpg',
    );
  });

  it('reads one-line sources with and without [signed-by=...] options', () => {
    const withKey = 'deb [arch=amd64 signed-by=/k/two.gpg] http://mirror.two/debian bookworm main\n';
    expect(sourceOf({ 'sources.list': withKey }, 'bookworm').out).toBe('http://mirror.two/debian /k/two.gpg');
    const plain = '# a comment\ndeb-src http://src.only/debian bookworm main\ndeb http://mirror.three/debian/ bookworm main contrib\n';
    expect(sourceOf({ 'sources.list': plain }, 'bookworm').out).toBe('http://mirror.three/debian/');
  });

  it('fails when no source carries the suite', () => {
    expect(sourceOf({ 'sources.list.d/debian.sources': deb822 }, 'trixie')).toEqual({ out: '', status: 1 });
    expect(sourceOf({}, 'bookworm').status).toBe(1);
  });
});

describe('scripts/setup-system.sh', () => {
  it('names no package-mirror host and does not call sudo for each step', () => {
    for (const f of ['scripts/setup-system.sh', 'scripts/apt-sources.sh']) {
      const text = readFileSync(f, 'utf8');
      expect(text).not.toMatch(/https?:\/\//);
      expect(text).not.toMatch(/\$SUDO|sudo apt/);
    }
  });

  it('refuses an unknown option with usage and exit 2', () => {
    const r = spawnSync('bash', ['scripts/setup-system.sh', '--bogus'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/unknown option: --bogus/);
  });

  it('parses as bash', () => {
    execFileSync('bash', ['-n', 'scripts/setup-system.sh']);
  });
});
