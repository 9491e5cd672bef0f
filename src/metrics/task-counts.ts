/**
 * Requests per task id: exact counts for the status page and for the opt-in
 * per-task Prometheus counter (top K only).
 *
 * Memory is bounded by `maxEntries`: task ids come from clients and from
 * uploads that are later removed, so the map must not grow with every id ever
 * seen. When it is full, the half with the fewest requests is dropped; the busy
 * tasks that matter for "top K" keep their exact counts.
 */
export class TaskRequestCounts {
  private readonly counts = new Map<string, number>();

  constructor(readonly maxEntries = 100_000) {}

  add(task: string, n = 1): void {
    this.counts.set(task, (this.counts.get(task) ?? 0) + n);
    if (this.counts.size > this.maxEntries) this.shrink();
  }

  get(task: string): number {
    return this.counts.get(task) ?? 0;
  }

  get size(): number {
    return this.counts.size;
  }

  /** The `k` busiest tasks, busiest first (ties by id, so the order is stable between scrapes). */
  top(k: number): [string, number][] {
    if (k <= 0) return [];
    return [...this.counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, k);
  }

  private shrink(): void {
    const keep = this.top(Math.floor(this.maxEntries / 2));
    this.counts.clear();
    for (const [task, n] of keep) this.counts.set(task, n);
  }
}
