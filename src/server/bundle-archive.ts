// Safe unpacking of an uploaded task archive (.tar / .tar.gz of a PetServe
// bundle or a PEFT adapter directory). The archive is read once as a stream
// and checked while it is read, before anything is written: only regular
// files and directories, no absolute or `..` paths, no links, a bounded entry
// count, bounded declared and actual entry sizes, bounded expanded bytes and
// compression ratio. The first violation stops the read at once, so a gzip
// bomb costs at most the bytes it took to find it. Inflating runs in Node's
// zlib thread pool, never on the event loop, in both passes.

import { createReadStream } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import * as tar from 'tar';
import { PET_MANIFEST_FILE } from '../pet/formats/bundle.js';
import { PEFT_CONFIG_FILE } from '../pet/formats/peft.js';
import { pathExists } from '../pet/formats/common.js';
import { ArchiveError } from './errors.js';

export interface ArchiveLimits {
  /** Sum of the regular files' sizes (declared in the headers and actually read). */
  maxUnpackedBytes: number;
  maxEntries: number;
  /** Expanded bytes per compressed byte, checked once MIN_RATIO_CHECK_BYTES have expanded. */
  maxCompressionRatio?: number;
}

export const DEFAULT_MAX_ARCHIVE_ENTRIES = 1000;
/**
 * Real PETs compress little (float weights: ~1.1:1; a zero-initialised LoRA B
 * half of them: ~2:1; float 0/1 masks: ~30:1). 200:1 is far above those and
 * far below what a bomb needs to hurt.
 */
export const DEFAULT_MAX_COMPRESSION_RATIO = 200;
/** Below this many expanded bytes the ratio is not judged: tiny archives (JSON, headers) compress very well. */
const MIN_RATIO_CHECK_BYTES = 4 * 1024 * 1024;
/** tar framing on top of the file data: a 512-byte header (+ up to 511 padding) per entry, the end blocks, pax headers. */
const FRAMING_BYTES_PER_ENTRY = 2048;

const REGULAR_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);
const ALLOWED_TYPES = new Set([...REGULAR_TYPES, 'Directory']);

/** Why `path` may not be written under the extraction root, or null when it may. */
function unsafePathReason(path: string): string | null {
  if (path.includes('\0')) return 'contains a NUL byte';
  if (path.includes('\\')) return 'contains a backslash';
  if (posix.isAbsolute(path) || /^[A-Za-z]:/.test(path)) return 'is absolute';
  if (path.split('/').includes('..')) return "contains '..'";
  return null;
}

async function isGzip(file: string): Promise<boolean> {
  const handle = await open(file, 'r');
  try {
    const magic = Buffer.alloc(2);
    const { bytesRead } = await handle.read(magic, 0, 2, 0);
    return bytesRead === 2 && magic[0] === 0x1f && magic[1] === 0x8b;
  } finally {
    await handle.close();
  }
}

/** The archive's bytes as a plain tar stream: gunzipped in the zlib thread pool when it is gzip. */
async function tarStages(file: string): Promise<{ stages: NodeJS.ReadWriteStream[]; source: NodeJS.ReadableStream }> {
  // Small reads: a refusal stops within one of them (at most ~16 MiB inflated at the worst deflate ratio).
  const source = createReadStream(file, { highWaterMark: 16 * 1024 });
  return { source, stages: (await isGzip(file)) ? [createGunzip()] : [] };
}

/** Thrown inside the pipeline to stop it; carries the reason out. */
class Refusal extends Error {}

/**
 * Read the archive once, checking every entry as it streams by; throws
 * ArchiveError naming the first violation, having stopped reading there.
 */
export async function inspectArchive(file: string, limits: ArchiveLimits): Promise<{ entries: number; unpackedBytes: number }> {
  const maxRatio = limits.maxCompressionRatio ?? DEFAULT_MAX_COMPRESSION_RATIO;
  const maxExpanded = limits.maxUnpackedBytes + (limits.maxEntries + 8) * FRAMING_BYTES_PER_ENTRY;
  let entries = 0;
  let declaredBytes = 0;
  let actualBytes = 0;
  let compressedRead = 0;
  let expanded = 0;
  let problem: string | null = null;
  let parseError: string | null = null;
  const refuse = (reason: string): void => {
    problem ??= reason;
  };

  const parser = new tar.Parser({ strict: true });
  parser.on('error', (err: Error) => {
    parseError ??= err.message;
  });
  parser.on('entry', (entry: tar.ReadEntry) => {
    if (problem !== null) {
      entry.resume();
      return;
    }
    entries += 1;
    const reason = !ALLOWED_TYPES.has(entry.type)
      ? `is a ${entry.type}${entry.linkpath ? ` to '${entry.linkpath}'` : ''}; only regular files and directories are accepted`
      : unsafePathReason(entry.path);
    if (reason) refuse(`entry '${entry.path}' ${reason}`);
    else if (entries > limits.maxEntries) refuse(`more than ${limits.maxEntries} entries`);
    else if (REGULAR_TYPES.has(entry.type)) {
      const declared = entry.size ?? 0;
      declaredBytes += declared;
      if (declared > limits.maxUnpackedBytes || declaredBytes > limits.maxUnpackedBytes) {
        refuse(`unpacks to more than ${limits.maxUnpackedBytes} bytes (server.maxUploadBytes)`);
      }
      let read = 0;
      entry.on('data', (chunk: Buffer) => {
        read += chunk.length;
        actualBytes += chunk.length;
        if (read > declared) refuse(`entry '${entry.path}' holds more bytes than its header declares`);
        else if (actualBytes > limits.maxUnpackedBytes) refuse(`unpacks to more than ${limits.maxUnpackedBytes} bytes (server.maxUploadBytes)`);
      });
      entry.on('end', () => {
        if (read < declared) refuse(`entry '${entry.path}' is shorter than its header declares (truncated archive)`);
      });
    }
    entry.resume();
  });

  const countCompressed = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      compressedRead += chunk.length;
      done(null, chunk);
    },
  });
  // Feeds the parser; refuses (ending the whole pipeline) as soon as a check fails.
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      expanded += chunk.length;
      if (expanded > maxExpanded) refuse(`unpacks to more than ${limits.maxUnpackedBytes} bytes (server.maxUploadBytes)`);
      else if (expanded > MIN_RATIO_CHECK_BYTES && expanded > maxRatio * compressedRead) {
        refuse(`expands more than ${maxRatio}:1 (a compression bomb?)`);
      }
      if (problem === null && parseError === null) {
        if (!parser.write(chunk)) {
          parser.once('drain', () => done(problem !== null || parseError !== null ? new Refusal() : null));
          return;
        }
      }
      done(problem !== null || parseError !== null ? new Refusal() : null);
    },
    final(done) {
      parser.once('end', () => done());
      parser.end();
    },
  });

  const { source, stages } = await tarStages(file);
  try {
    await pipeline([source, countCompressed, ...stages, sink] as unknown as [NodeJS.ReadableStream, NodeJS.WritableStream]);
  } catch (err) {
    if (!(err instanceof Refusal) && problem === null) {
      parseError ??= (err as Error).message;
    }
  }
  if (problem !== null) {
    const compressedTotal = (await stat(file)).size;
    throw new ArchiveError(`refused archive: ${problem} (stopped after reading ${compressedRead} of its ${compressedTotal} bytes)`);
  }
  if (parseError !== null) throw new ArchiveError(`not a readable .tar or .tar.gz archive: ${parseError}`);
  if (entries === 0) throw new ArchiveError('the archive is empty');
  return { entries, unpackedBytes: actualBytes };
}

/**
 * Check, then unpack `file` into the empty directory `dest`; returns the PET
 * directory inside it (the root, or the single top-level directory when the
 * archive wraps the files in one, as `tar czf x.tgz mydir` does).
 */
export async function extractPetArchive(file: string, dest: string, limits: ArchiveLimits): Promise<string> {
  await inspectArchive(file, limits);
  const { source, stages } = await tarStages(file);
  try {
    const unpack = tar.x({
      cwd: dest,
      strict: true,
      preservePaths: false,
      // Running as root, tar would otherwise chown files to the archive's uid/gid.
      preserveOwner: false,
      // Second line of defence: inspectArchive already refused these.
      filter: (path, entry) => 'type' in entry && ALLOWED_TYPES.has(entry.type) && unsafePathReason(path) === null,
    });
    await pipeline([source, ...stages, unpack] as unknown as [NodeJS.ReadableStream, NodeJS.WritableStream]);
  } catch (err) {
    // tar's and fs' messages name paths on this server: give the code only (the full error is the cause, for the log).
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ArchiveError(`cannot unpack the archive (${code})`, { cause: err });
  }
  return locatePetDirectory(dest);
}

const isPetDir = async (dir: string): Promise<boolean> =>
  (await pathExists(join(dir, PET_MANIFEST_FILE))) || (await pathExists(join(dir, PEFT_CONFIG_FILE)));

async function locatePetDirectory(root: string): Promise<string> {
  if (await isPetDir(root)) return root;
  // macOS tar adds '._*' AppleDouble files and '__MACOSX'; they are not part of the PET.
  const entries = (await readdir(root, { withFileTypes: true })).filter((e) => !e.name.startsWith('._') && e.name !== '__MACOSX');
  if (entries.length === 1 && entries[0]!.isDirectory()) {
    const inner = join(root, entries[0]!.name);
    if (await isPetDir(inner)) return inner;
  }
  throw new ArchiveError(
    `the archive holds no PET: expected ${PET_MANIFEST_FILE} (PetServe bundle) or ${PEFT_CONFIG_FILE} (PEFT) at its root or in its single top-level directory`,
  );
}
