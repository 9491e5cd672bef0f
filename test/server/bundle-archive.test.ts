import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { extractPetArchive, inspectArchive } from '../../src/server/bundle-archive.js';
import { ArchiveError } from '../../src/server/errors.js';
import { tarBuffer, writeZeroBomb, type TarEntry } from './tar-fixture.js';

let root: string;
let dest: string;
let n = 0;
const limits = { maxUnpackedBytes: 10_000, maxEntries: 20 };

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'petserve-archive-'));
});
afterAll(async () => rm(root, { recursive: true, force: true }));
beforeEach(async () => {
  // Each case unpacks into its own directory inside a parent we can check for escapes.
  dest = join(root, `case-${++n}`, 'dest');
  await mkdir(dest, { recursive: true });
});

async function archive(entries: TarEntry[], gzip = false): Promise<string> {
  const file = join(root, `a-${n}.tar${gzip ? '.gz' : ''}`);
  await writeFile(file, tarBuffer(entries, { gzip }));
  return file;
}

const manifest: TarEntry = { path: 'pet.json', data: '{"kind":"lora"}' };

async function expectRefused(entries: TarEntry[], message: RegExp): Promise<void> {
  const file = await archive(entries);
  const err = await extractPetArchive(file, dest, limits).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ArchiveError);
  expect((err as Error).message).toMatch(message);
  // Checked before extraction: nothing written, inside or beside the destination.
  expect(await readdir(dest)).toEqual([]);
  expect(await readdir(join(dest, '..'))).toEqual(['dest']);
}

describe('task archive unpacking', () => {
  it('finds the PET at the root of the archive', async () => {
    const file = await archive([manifest, { path: 'pet.safetensors', data: 'x' }], true);
    expect(await extractPetArchive(file, dest, limits)).toBe(dest);
    expect(await readFile(join(dest, 'pet.json'), 'utf8')).toBe('{"kind":"lora"}');
  });

  it('finds the PET in a single wrapping directory (tar czf x.tgz mydir)', async () => {
    const file = await archive([{ path: 'mydir/', type: 'dir' }, { path: 'mydir/adapter_config.json', data: '{}' }]);
    expect(await extractPetArchive(file, dest, limits)).toBe(join(dest, 'mydir'));
  });

  it("refuses '..' paths, absolute paths, symlinks and hard links before writing anything", async () => {
    await expectRefused([manifest, { path: '../evil', data: 'x' }], /'\.\.\/evil' contains '\.\.'/);
    await expectRefused([manifest, { path: 'a/../../evil', data: 'x' }], /contains '\.\.'/);
    await expectRefused([manifest, { path: '/tmp/evil', data: 'x' }], /is absolute/);
    await expectRefused([manifest, { path: 'link', type: 'symlink', linkpath: '/etc/passwd' }], /SymbolicLink to '\/etc\/passwd'/);
    await expectRefused([manifest, { path: 'hard', type: 'hardlink', linkpath: 'pet.json' }], /Link/);
  });

  it('refuses archives that unpack too large or hold too many entries', async () => {
    await expectRefused([manifest, { path: 'big', data: Buffer.alloc(10_001) }], /more than 10000 bytes/);
    await expectRefused(
      Array.from({ length: 21 }, (_, i) => ({ path: `f${i}`, data: 'x' })),
      /more than 20 entries/,
    );
  });

  it('refuses what is not a tar archive, an empty one, or one without a PET', async () => {
    const junk = join(root, 'junk.bin');
    await writeFile(junk, Buffer.from('PK\u0003\u0004 this is a zip, not a tar'));
    await expect(inspectArchive(junk, limits)).rejects.toThrow(/not a readable \.tar/);
    await expectRefused([], /not a readable|empty/);
    // Found out after unpacking (the caller removes its staging directory).
    const readme = await archive([{ path: 'README', data: 'hi' }]);
    await expect(extractPetArchive(readme, dest, limits)).rejects.toThrow(/holds no PET/);
    // Two top-level directories: ambiguous, not guessed.
    const two = await archive([{ path: 'a/pet.json', data: '{}' }, { path: 'b/pet.json', data: '{}' }]);
    await expect(extractPetArchive(two, dest, limits)).rejects.toThrow(/holds no PET/);
  });
});


const stoppedAt = (message: string): { read: number; total: number } => {
  const m = /stopped after reading (\d+) of its (\d+) bytes/.exec(message);
  if (!m) throw new Error(`no progress in '${message}'`);
  return { read: Number(m[1]), total: Number(m[2]) };
};

describe('task archives are checked as a stream that stops at the first violation', () => {
  it('a bomb whose header declares too much is refused at that header, having read a fraction of the file', async () => {
    const file = join(root, 'declared-bomb.tar.gz');
    await writeZeroBomb(file, 256 * 1024 * 1024);
    const err = (await inspectArchive(file, { maxUnpackedBytes: 1024 * 1024, maxEntries: 20 }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(ArchiveError);
    expect(err.message).toMatch(/more than 1048576 bytes/);
    const { read, total } = stoppedAt(err.message);
    expect(read).toBeLessThan(total / 2);
  });

  it('a bomb within the size limit is refused by its compression ratio long before its end', async () => {
    const file = join(root, 'ratio-bomb.tar.gz');
    await writeZeroBomb(file, 120 * 1024 * 1024);
    const err = (await inspectArchive(file, { maxUnpackedBytes: 128 * 1024 * 1024, maxEntries: 20 }).catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/expands more than 200:1/);
    const { read, total } = stoppedAt(err.message);
    expect(read).toBeLessThan(total / 2);
  });

  it('the first bad entry stops the read: what follows it is never inflated', async () => {
    const file = join(root, 'bad-first.tar.gz');
    await writeZeroBomb(file, 120 * 1024 * 1024, [{ path: '../evil', data: 'x' }]);
    const err = (await inspectArchive(file, { maxUnpackedBytes: 128 * 1024 * 1024, maxEntries: 20 }).catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/'\.\.\/evil' contains '\.\.'/);
    const { read, total } = stoppedAt(err.message);
    expect(read).toBeLessThan(total / 2);
  });

  it('an entry shorter than its header (a truncated archive) is refused', async () => {
    const whole = tarBuffer([manifest, { path: 'pet.safetensors', data: Buffer.alloc(4096, 7) }]);
    const file = join(root, 'truncated.tar');
    await writeFile(file, whole.subarray(0, 512 + 512 + 512 + 1000));
    const err = (await inspectArchive(file, limits).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(ArchiveError);
    expect(err.message).toMatch(/shorter than its header|not a readable/);
  });

  it('a normal gzipped bundle passes with its entry count and bytes', async () => {
    const file = await archive([manifest, { path: 'pet.safetensors', data: Buffer.alloc(3000, 1) }], true);
    expect(await inspectArchive(file, limits)).toEqual({ entries: 2, unpackedBytes: 3000 + manifest.data!.length });
  });
});
