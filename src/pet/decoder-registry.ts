import type { DecoderConfig, DecoderFamily } from '../model/families/decoder/types.js';
import { InvalidInputError } from '../util/errors.js';
import type { DecoderAdapter } from './decoder-adapter.js';
import { loadDecoderPeft } from './formats/peft-decoder.js';
import { TaskExistsError, UnknownTaskError } from './registry.js';

export interface DecoderTaskInfo {
  taskId: string;
  dir: string;
  kind: 'lora' | 'ia3';
  /** Host bytes of the adapter's tensors (what a page-in copies). */
  bytes: number;
  maxRank: number;
  touchesKv: boolean;
}

/**
 * The adapters (tasks) of one decoder base, by task id, on the host. They page
 * into the shared PET GPU pool on demand (the runner's pool); unregistering a
 * task that sequences still use waits for nothing: in-flight sequences keep
 * their pinned copy until they finish.
 */
export class DecoderTaskRegistry {
  private readonly tasks = new Map<string, { info: DecoderTaskInfo; adapter: DecoderAdapter }>();

  constructor(private readonly model: { family: DecoderFamily; config: DecoderConfig }) {}

  async register(taskId: string, dir: string): Promise<DecoderTaskInfo> {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(taskId)) {
      throw new InvalidInputError(`task id '${taskId.slice(0, 64)}' must be 1-128 characters of letters, digits, '.', '_' or '-'`);
    }
    if (this.tasks.has(taskId)) throw new TaskExistsError(taskId);
    const adapter = await loadDecoderPeft(dir, this.model);
    const info: DecoderTaskInfo = { taskId, dir, kind: adapter.kind, bytes: adapter.floats.byteLength, maxRank: adapter.maxRank, touchesKv: adapter.touchesKv };
    this.tasks.set(taskId, { info, adapter });
    return info;
  }

  unregister(taskId: string): void {
    if (!this.tasks.delete(taskId)) throw new UnknownTaskError(taskId);
  }

  has(taskId: string): boolean {
    return this.tasks.has(taskId);
  }

  adapter(taskId: string): DecoderAdapter {
    const t = this.tasks.get(taskId);
    if (!t) throw new UnknownTaskError(taskId);
    return t.adapter;
  }

  list(): DecoderTaskInfo[] {
    return [...this.tasks.values()].map((t) => t.info);
  }
}
