// A minimal ustar writer for hostile test archives: the tar package refuses to
// create '../' paths or absolute names, which is exactly what the tests need.

import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip, gzipSync } from 'node:zlib';

export interface TarEntry {
  path: string;
  type?: 'file' | 'dir' | 'symlink' | 'hardlink';
  data?: Buffer | string;
  linkpath?: string;
  /** Declared size when it must differ from the data (a lying header). */
  size?: number;
}

const TYPE_FLAG = { file: '0', hardlink: '1', symlink: '2', dir: '5' } as const;

function header(e: TarEntry, size: number): Buffer {
  const h = Buffer.alloc(512, 0);
  const put = (s: string, offset: number, length: number): void => void h.write(s.slice(0, length), offset, 'utf8');
  const octal = (n: number, length: number): string => n.toString(8).padStart(length - 1, '0');
  put(e.path, 0, 100);
  put(octal(e.type === 'dir' ? 0o755 : 0o644, 8), 100, 8);
  put(octal(0, 8), 108, 8);
  put(octal(0, 8), 116, 8);
  put(octal(size, 12), 124, 12);
  put(octal(Math.floor(Date.now() / 1000), 12), 136, 12);
  h.fill(' ', 148, 156);
  put(TYPE_FLAG[e.type ?? 'file'], 156, 1);
  if (e.linkpath) put(e.linkpath, 157, 100);
  put('ustar\u000000', 257, 8);
  let sum = 0;
  for (const b of h) sum += b;
  put(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8);
  return h;
}

export function tarBuffer(entries: readonly TarEntry[], opts: { gzip?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.type === 'file' || e.type === undefined ? Buffer.from(e.data ?? '') : Buffer.alloc(0);
    parts.push(header(e, e.size ?? data.length));
    parts.push(data, Buffer.alloc((512 - (data.length % 512)) % 512, 0));
  }
  parts.push(Buffer.alloc(1024, 0));
  const tar = Buffer.concat(parts);
  return opts.gzip ? gzipSync(tar) : tar;
}

/** Every file of `dir` as entries under `prefix` (a wrapping directory like `tar czf x.tgz mydir`). */
export async function dirEntries(dir: string, prefix = ''): Promise<TarEntry[]> {
  const out: TarEntry[] = prefix ? [{ path: `${prefix}/`, type: 'dir' }] : [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const full = join(d, e.name);
      const rel = (prefix ? `${prefix}/` : '') + relative(dir, full);
      if (e.isDirectory()) {
        out.push({ path: `${rel}/`, type: 'dir' });
        await walk(full);
      } else out.push({ path: rel, data: await readFile(full) });
    }
  };
  await walk(dir);
  return out;
}

/** A gzipped tar whose one file is `size` zero bytes, streamed so the test never holds it expanded. */
export async function writeZeroBomb(file: string, size: number, entries: TarEntry[] = []): Promise<void> {
  const gzip = createGzip({ level: 9 });
  const out = createWriteStream(file);
  const done = pipeline(gzip, out);
  const write = async (buf: Buffer): Promise<void> => {
    if (!gzip.write(buf)) await once(gzip, 'drain');
  };
  // Leading entries, then the big file's header (without the end blocks tarBuffer appends).
  const head = tarBuffer([...entries, { path: 'weights.bin', size, data: '' }]);
  await write(head.subarray(0, head.length - 1024));
  const zeros = Buffer.alloc(1024 * 1024);
  for (let left = size; left > 0; left -= zeros.length) await write(left >= zeros.length ? zeros : zeros.subarray(0, left));
  await write(Buffer.alloc(1024));
  gzip.end();
  await done;
}
