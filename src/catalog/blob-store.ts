import { cp, mkdir, rename, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { InvalidInputError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';

/**
 * Where PET files live for every replica and worker. A blob is one PET
 * directory, addressed by (task id, content hash); the catalog records its
 * location. Replicas copy a blob into their own host cache before registering
 * it, so a blob store may be remote (S3 is the next backend: same three calls).
 */
export interface BlobStore {
  /** Store the files of `sourceDir` for (taskId, contentHash); idempotent. Returns the location. */
  put(taskId: string, contentHash: string, sourceDir: string): Promise<string>;
  /** Copy the blob at `location` into `destDir`, which must not exist yet. */
  fetch(location: string, destDir: string): Promise<void>;
  /** Remove the blob at `location`; removing a missing blob is not an error. */
  remove(location: string): Promise<void>;
  /** What logs and status show of this store. */
  describe(): string;
}

const LOCATION = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\/[0-9a-f]{64}$/;

/**
 * A blob store on a shared directory: an NFS or ReadWriteMany volume in
 * production, a plain directory in tests. Layout: <root>/<task id>/<sha256>/.
 * A put copies into a hidden staging directory and renames it into place, so a
 * reader never sees half a blob.
 */
export class DirectoryBlobStore implements BlobStore {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  describe(): string {
    return `directory ${this.root}`;
  }

  async put(taskId: string, contentHash: string, sourceDir: string): Promise<string> {
    const location = `${taskId}/${contentHash}`;
    const target = this.pathOf(location);
    if (await pathExists(target)) return location;
    await mkdir(dirname(target), { recursive: true });
    const staging = join(dirname(target), `.staging-${contentHash}-${process.pid}-${Date.now()}`);
    try {
      await cp(sourceDir, staging, { recursive: true, errorOnExist: true, force: false });
      await rename(staging, target);
    } catch (err) {
      // Another replica stored the same content first: the blob is there either way.
      const code = (err as NodeJS.ErrnoException).code;
      if (!(code === 'ENOTEMPTY' || code === 'EEXIST') || !(await pathExists(target))) throw err;
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
    return location;
  }

  async fetch(location: string, destDir: string): Promise<void> {
    await cp(this.pathOf(location), destDir, { recursive: true, errorOnExist: true, force: false });
  }

  async remove(location: string): Promise<void> {
    await rm(this.pathOf(location), { recursive: true, force: true });
  }

  /** Locations come from Redis: only the shape we write may become a path. */
  private pathOf(location: string): string {
    if (!LOCATION.test(location)) throw new InvalidInputError(`not a blob location of this store: '${location}'`);
    return join(this.root, location);
  }
}
