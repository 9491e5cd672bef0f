import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';

export interface CpuSample {
  /** Busy CPU time of the whole machine (all cores), ms. */
  machineBusyMs: number;
  /** Busy + idle time of the whole machine, ms. */
  machineTotalMs: number;
  /** CPU time of this process (every thread, lavapipe's workers included), ms. */
  ownMs: number;
}

export interface QuietPolicy {
  /** Other processes may use at most this share of the machine's CPU before a measurement starts. */
  maxOtherShare: number;
  /** Length of one load probe. */
  probeMs: number;
  /** Longest wait before one measurement. */
  maxWaitMs: number;
  /** Longest wait over the whole run; once spent, measurements start regardless (and say so). */
  totalWaitMs: number;
}

export function sampleCpu(): CpuSample {
  let busy = 0;
  let total = 0;
  for (const { times } of os.cpus()) {
    const b = times.user + times.nice + times.sys + times.irq;
    busy += b;
    total += b + times.idle;
  }
  const own = process.cpuUsage();
  return { machineBusyMs: busy, machineTotalMs: total, ownMs: (own.user + own.system) / 1000 };
}

/**
 * Share of the machine's CPU capacity used by OTHER processes since `from`.
 * On a CPU WebGPU device (lavapipe) they compete with the kernels for the
 * same cores, so a measurement taken while this is high is too slow.
 */
export function otherCpuShare(from: CpuSample, to: CpuSample = sampleCpu()): number {
  const total = to.machineTotalMs - from.machineTotalMs;
  if (total <= 0) return 0;
  const others = to.machineBusyMs - from.machineBusyMs - (to.ownMs - from.ownMs);
  return Math.min(1, Math.max(0, others / total));
}

/**
 * Holds measurements back while other processes load the CPU (tests running
 * beside the benchmark on a shared machine), within a bounded waiting budget.
 */
export class QuietGate {
  private waitedTotalMs = 0;

  constructor(
    readonly policy: QuietPolicy,
    private readonly log: (msg: string) => void,
  ) {}

  get waitedMs(): number {
    return this.waitedTotalMs;
  }

  /** Wait until a probe sees other processes below the threshold, or the wait budget is spent. */
  async waitForQuiet(): Promise<void> {
    const p = this.policy;
    const started = performance.now();
    let warned = false;
    for (;;) {
      const before = sampleCpu();
      await sleep(p.probeMs);
      const share = otherCpuShare(before);
      const waited = performance.now() - started;
      if (share <= p.maxOtherShare) break;
      if (waited >= p.maxWaitMs || this.waitedTotalMs + waited >= p.totalWaitMs) {
        this.log(`other processes use ${(share * 100).toFixed(0)}% of the CPU; measuring anyway`);
        break;
      }
      if (!warned) {
        this.log(`other processes use ${(share * 100).toFixed(0)}% of the CPU; waiting for quiet`);
        warned = true;
      }
    }
    // Only time beyond the first probe counts as waiting.
    this.waitedTotalMs += Math.max(0, performance.now() - started - p.probeMs);
  }
}
