import type { DecoderConfig, DecoderFamily } from '../model/families/decoder/types.js';
import type { DecoderAdapter } from './decoder-adapter.js';
import { loadDecoderPeft } from './formats/peft-decoder.js';
import { checkTaskIdFormat, TaskExistsError, UnknownTaskError } from './registry.js';

export interface DecoderTaskInfo {
  taskId: string;
  dir: string;
  kind: 'lora' | 'ia3';
  /** Host bytes of the adapter's tensors (what a page-in copies). */
  bytes: number;
  maxRank: number;
  touchesKv: boolean;
  registeredAt: string;
}

/**
 * The adapters (tasks) of one decoder base, by task id, on the host. They page
 * into the device's PET GPU pool on demand (DevicePetPool, shared with the
 * encoder's tasks: a registration's key `taskId@n` is never a task id, so the
 * two never meet in it); unregistering a task that sequences still use waits
 * for nothing: in-flight sequences keep the registration they resolved at
 * submit until they finish.
 */
/** A registered adapter as a sequence holds it: `key` names this registration (pool page, prefix-cache chain). */
export interface ResolvedAdapter {
  key: string;
  adapter: DecoderAdapter;
}

export class DecoderTaskRegistry {
  private readonly tasks = new Map<string, { info: DecoderTaskInfo; adapter: DecoderAdapter; key: string }>();
  // A task id registered again gets a new key, so its old pool copy and cached KV blocks are never reused.
  private registrations = 0;

  /**
   * `idTakenElsewhere`: ids the server's other models answer under (the encoder
   * base and its tasks, the decoder base). Every model on a server shares one
   * namespace of ids, as the OpenAI `model` field and /v1/tasks name them.
   */
  constructor(
    private readonly model: { family: DecoderFamily; config: DecoderConfig },
    private readonly idTakenElsewhere: (id: string) => boolean = () => false,
  ) {}

  /** Refuse an id that is malformed or in use (here or by another model), before any work. */
  checkNewId(taskId: string): void {
    checkTaskIdFormat(taskId);
    if (this.tasks.has(taskId)) throw new TaskExistsError(taskId);
    if (this.idTakenElsewhere(taskId)) throw new TaskExistsError(taskId, 'is the id of another model or task on this server');
  }

  async register(taskId: string, dir: string): Promise<DecoderTaskInfo> {
    this.checkNewId(taskId);
    const adapter = await loadDecoderPeft(dir, this.model);
    // Checked again: another registration of this id may have finished while the adapter loaded.
    this.checkNewId(taskId);
    const info: DecoderTaskInfo = {
      taskId,
      dir,
      kind: adapter.kind,
      bytes: adapter.floats.byteLength,
      maxRank: adapter.maxRank,
      touchesKv: adapter.touchesKv,
      registeredAt: new Date().toISOString(),
    };
    this.tasks.set(taskId, { info, adapter, key: `${taskId}@${++this.registrations}` });
    return info;
  }

  /** Forget the task; returns the key of the registration that went (to drop its pool copy and cached blocks). */
  unregister(taskId: string): string {
    const t = this.tasks.get(taskId);
    if (!t) throw new UnknownTaskError(taskId);
    this.tasks.delete(taskId);
    return t.key;
  }

  has(taskId: string): boolean {
    return this.tasks.has(taskId);
  }

  get(taskId: string): DecoderTaskInfo | undefined {
    return this.tasks.get(taskId)?.info;
  }

  /** The current registration of `taskId` (a sequence keeps it to its end, even if the task is unregistered meanwhile). */
  resolve(taskId: string): ResolvedAdapter {
    const t = this.tasks.get(taskId);
    if (!t) throw new UnknownTaskError(taskId);
    return { key: t.key, adapter: t.adapter };
  }

  list(): DecoderTaskInfo[] {
    return [...this.tasks.values()].map((t) => t.info);
  }
}
