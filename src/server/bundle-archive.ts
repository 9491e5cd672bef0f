// Safe unpacking of an uploaded task archive (.tar / .tar.gz of a PetServe
// bundle or a PEFT adapter directory). The archive is listed and checked in
// full before anything is written: only regular files and directories, no
// absolute or `..` paths, no links, bounded entry count and unpacked size
// (a gzip bomb is stopped by the sizes in the tar headers, which tar honours).

import { readdir } from 'node:fs/promises';
import { join, posix } from 'node:path';
import * as tar from 'tar';
import { PET_MANIFEST_FILE } from '../pet/formats/bundle.js';
import { PEFT_CONFIG_FILE } from '../pet/formats/peft.js';
import { pathExists } from '../pet/formats/common.js';
import { ArchiveError } from './errors.js';

export interface ArchiveLimits {
  maxUnpackedBytes: number;
  maxEntries: number;
}

export const DEFAULT_MAX_ARCHIVE_ENTRIES = 1000;

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

/** List and check every entry; throws ArchiveError naming the first offending entry. */
export async function inspectArchive(file: string, limits: ArchiveLimits): Promise<{ entries: number; unpackedBytes: number }> {
  let entries = 0;
  let unpackedBytes = 0;
  let problem: string | null = null;
  try {
    await tar.t({
      file,
      strict: true,
      onReadEntry: (entry) => {
        entry.resume();
        if (problem) return;
        entries += 1;
        const reason = !ALLOWED_TYPES.has(entry.type)
          ? `is a ${entry.type}${entry.linkpath ? ` to '${entry.linkpath}'` : ''}; only regular files and directories are accepted`
          : unsafePathReason(entry.path);
        if (reason) problem = `entry '${entry.path}' ${reason}`;
        else if (entries > limits.maxEntries) problem = `more than ${limits.maxEntries} entries`;
        else if (REGULAR_TYPES.has(entry.type)) {
          unpackedBytes += entry.size ?? 0;
          if (unpackedBytes > limits.maxUnpackedBytes) problem = `unpacks to more than ${limits.maxUnpackedBytes} bytes (server.maxUploadBytes)`;
        }
      },
    });
  } catch (err) {
    throw new ArchiveError(`not a readable .tar or .tar.gz archive: ${(err as Error).message}`);
  }
  if (problem) throw new ArchiveError(`refused archive: ${problem}`);
  if (entries === 0) throw new ArchiveError('the archive is empty');
  return { entries, unpackedBytes };
}

/**
 * Check, then unpack `file` into the empty directory `dest`; returns the PET
 * directory inside it (the root, or the single top-level directory when the
 * archive wraps the files in one, as `tar czf x.tgz mydir` does).
 */
export async function extractPetArchive(file: string, dest: string, limits: ArchiveLimits): Promise<string> {
  await inspectArchive(file, limits);
  try {
    await tar.x({
      file,
      cwd: dest,
      strict: true,
      preservePaths: false,
      // Running as root, tar would otherwise chown files to the archive's uid/gid.
      preserveOwner: false,
      // Second line of defence: inspectArchive already refused these.
      filter: (path, entry) => 'type' in entry && ALLOWED_TYPES.has(entry.type) && unsafePathReason(path) === null,
    });
  } catch (err) {
    throw new ArchiveError(`cannot unpack the archive: ${(err as Error).message}`);
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
