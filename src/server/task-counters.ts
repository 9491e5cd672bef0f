import type { TaskCounters } from './protocol/v1.js';

/**
 * Per-task request counts kept in memory for GET /v1/tasks. Only registered
 * tasks are counted (requests for unknown ids would otherwise grow the map
 * without bound); a task's counts go when it is unregistered.
 */
export class TaskRequestCounters {
  private readonly byTask = new Map<string, TaskCounters>();

  /** `isRegistered`: a request that finishes after its task was deleted is not counted. */
  constructor(private readonly isRegistered: (task: string) => boolean) {}

  record(task: string, inputs: number, ok: boolean): void {
    if (!this.isRegistered(task)) return;
    let c = this.byTask.get(task);
    if (!c) {
      c = { requests: 0, inputs: 0, errors: 0, lastRequestAt: null };
      this.byTask.set(task, c);
    }
    c.requests += 1;
    c.inputs += inputs;
    if (!ok) c.errors += 1;
    c.lastRequestAt = new Date().toISOString();
  }

  get(task: string): TaskCounters {
    return { ...(this.byTask.get(task) ?? { requests: 0, inputs: 0, errors: 0, lastRequestAt: null }) };
  }

  forget(task: string): void {
    this.byTask.delete(task);
  }
}
