import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';

/**
 * The content hash of a PET directory: sha256 over every regular file's path
 * (relative, '/'-separated, sorted) and bytes. Two replicas that hold the same
 * files agree on it, so the catalog can tell "same task, new content" from
 * "same content" without comparing files, and blobs are stored by it.
 */
export async function hashDirectory(dir: string): Promise<{ hash: string; bytes: number; files: string[] }> {
  const files = (await listFiles(dir)).map((f) => relative(dir, f).split(sep).join('/')).sort();
  const h = createHash('sha256');
  let bytes = 0;
  for (const rel of files) {
    const data = await readFile(join(dir, rel));
    bytes += data.byteLength;
    // Length-prefixed fields: no concatenation of two (path, bytes) pairs can equal another.
    h.update(`${rel.length}:${rel}:${data.byteLength}:`);
    h.update(data);
  }
  return { hash: h.digest('hex'), bytes, files };
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(path)));
    // Symlinks and special files are not part of a PET (archives refuse them too).
    else if (entry.isFile()) out.push(path);
  }
  return out;
}
