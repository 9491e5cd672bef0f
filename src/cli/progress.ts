/**
 * Progress of long CLI work (batch waits, model generation, benchmarks,
 * profiling), always on stderr: stdout holds only results.
 *
 * - live: one redrawn line (cli-progress) when both stderr and stdout are
 *   terminals: someone is watching.
 * - plain: when output is piped or logged, a plain line when it starts
 *   showing (at once, or after `showAfterMs`), then at most one every
 *   `plainIntervalMs` (also while nothing changes, so a log shows the work is
 *   alive), and a last one at stop. No escape codes.
 *
 * Lower layers (model, scheduler) never import this: they take an
 * `onProgress(done, total)` callback and the CLI command bridges the two.
 */
import cliProgress from 'cli-progress';

export type ProgressMode = 'auto' | 'live' | 'plain' | 'off';

/** Where progress is written: process.stderr, or a test double. */
export interface ProgressStream {
  write(chunk: string): boolean;
  isTTY?: boolean | undefined;
  columns?: number | undefined;
}

export interface ProgressOptions {
  /** Names the work, e.g. `petserve: batch 7f3a` or `[bench] gemm`. */
  label: string;
  /** Units of work in all; 0 when not known yet (no ETA until update() gives one). */
  total: number;
  /**
   * What had settled before watching began (a wait joined half-way): the
   * rate and ETA count only what settles from here on. Default: nothing.
   */
  initial?: ProgressCounts;
  /** What one unit is, for the rate: items (default), tensors, runs, ... */
  unit?: string;
  stream?: ProgressStream;
  /** auto (default): live when `stream` and stdout are terminals, else plain. */
  mode?: ProgressMode;
  /** Plain mode: the shortest gap between two lines (default 2000 ms). */
  plainIntervalMs?: number;
  /**
   * Stay silent unless the work is still running this long after the start
   * (default 0: show at once). Steps that are usually quick but sometimes
   * slow (a small vs a large model) then print nothing when quick.
   */
  showAfterMs?: number;
  /** Clock in ms (tests pass a fake one). */
  now?: () => number;
  /** When the work began, if before this call (ms on the same clock); default now. */
  startedAtMs?: number;
  /** Time-boxed work (a load test of fixed duration): the ETA is the time left to this, not derived from the rate. */
  endsAtMs?: number;
}

/** Absolute counts: what has settled so far. */
export interface ProgressCounts {
  /** Units finished successfully; unchanged when absent (a note alone). */
  done?: number;
  /** Units that failed; shown once any update carries it. */
  failed?: number;
  /** A new total, when it is learned or changes. */
  total?: number;
  /** Short free text after the counts, e.g. the batch status. */
  note?: string;
}

export interface Progress {
  update(counts: ProgressCounts): void;
  /** done += by (default 1). */
  increment(by?: number): void;
  /** A message line on the same stream that does not tear the live line (it prints above it). */
  log(message: string): void;
  /**
   * Draw the last state and release the line; later calls do nothing. Call it
   * in a `finally`: a live line's redraw timer keeps the process alive.
   */
  stop(): void;
}

const DEFAULT_PLAIN_INTERVAL_MS = 2000;

/**
 * Work that runs in phases, each counted to its own total (generate then
 * write the tensors of a checkpoint): one progress per phase, the next
 * starting when a report names a new phase.
 */
export interface PhasedProgress<P extends string> {
  report(phase: P, done: number, total: number): void;
  stop(): void;
}

export function startPhasedProgress<P extends string>(
  labelOf: (phase: P) => string,
  opts: Omit<ProgressOptions, 'label' | 'total' | 'initial' | 'startedAtMs'> = {},
): PhasedProgress<P> {
  const now = opts.now ?? Date.now;
  // A phase began when the one before it last reported (the first: now).
  let phaseStartMs = now();
  let current: { phase: P; progress: Progress } | null = null;
  return {
    report(phase, done, total) {
      if (current?.phase !== phase) {
        current?.progress.stop();
        current = { phase, progress: startProgress({ ...opts, label: labelOf(phase), total, startedAtMs: phaseStartMs }) };
      }
      current.progress.update({ done, total });
      phaseStartMs = now();
    },
    stop() {
      current?.progress.stop();
    },
  };
}

export function startProgress(opts: ProgressOptions): Progress {
  const stream = opts.stream ?? process.stderr;
  const mode = resolveMode(opts.mode ?? 'auto', stream);
  const now = opts.now ?? Date.now;
  const state = new ProgressState(opts.label, opts.total, opts.unit ?? 'items', opts.startedAtMs ?? now(), opts.initial, opts.endsAtMs ?? null);
  const showAfterMs = opts.showAfterMs ?? 0;
  if (mode === 'off') return progressOf(state, stream, now, { render: () => undefined, log: (line) => stream.write(`${line}\n`), finish: () => undefined });
  if (mode === 'live') return liveProgress(state, stream, now, showAfterMs);
  return plainProgress(state, stream, now, opts.plainIntervalMs ?? DEFAULT_PLAIN_INTERVAL_MS, showAfterMs);
}

function resolveMode(mode: ProgressMode, stream: ProgressStream): Exclude<ProgressMode, 'auto'> {
  if (mode !== 'auto') return mode;
  return stream.isTTY === true && process.stdout.isTTY === true ? 'live' : 'plain';
}

/** Counts, rate and ETA, shared by both renderings so they always agree. */
class ProgressState {
  done = 0;
  failed: number | null = null;
  note = '';
  /** Settled when watching began: the rate counts only what settles after it. */
  private readonly settledAtStart: number;
  /**
   * The first change after the start. The rate runs from here: units after
   * it over the time since, so start-up costs before the first unit
   * (pipeline compiles, warm-ups) do not drag the ETA for the rest.
   */
  private firstChange: { settled: number; atMs: number } | null = null;

  constructor(
    readonly label: string,
    public total: number,
    readonly unit: string,
    readonly startMs: number,
    initial: ProgressCounts | undefined,
    private readonly endsAtMs: number | null,
  ) {
    if (initial !== undefined) this.apply(initial, startMs);
    this.settledAtStart = this.settled;
    this.firstChange = null;
  }

  apply(c: ProgressCounts, nowMs: number): void {
    if (c.done !== undefined) this.done = c.done;
    if (c.failed !== undefined) this.failed = c.failed;
    if (c.total !== undefined) this.total = c.total;
    if (c.note !== undefined) this.note = c.note;
    if (this.firstChange === null && this.settled !== this.settledAtStart) this.firstChange = { settled: this.settled, atMs: nowMs };
  }

  get settled(): number {
    return this.done + (this.failed ?? 0);
  }

  /**
   * Units per second. While running: since the first change, null until a
   * second one (the ETA's basis). Finished: over the whole run, the figure a
   * summary should give (work that settles in bursts, like batches, would
   * otherwise report the gap between its last two bursts).
   */
  ratePerS(nowMs: number, finished = false): number | null {
    const from = finished ? { settled: this.settledAtStart, atMs: this.startMs } : this.firstChange;
    if (from === null) return null;
    const units = this.settled - from.settled;
    const seconds = (nowMs - from.atMs) / 1000;
    return units > 0 && seconds > 0 ? units / seconds : null;
  }

  etaS(nowMs: number): number | null {
    if (this.endsAtMs !== null) return Math.max(0, this.endsAtMs - nowMs) / 1000;
    const rate = this.ratePerS(nowMs);
    if (rate === null || this.total <= 0) return null;
    return Math.max(0, this.total - this.settled) / rate;
  }

  /** `12/40 (done 11, failed 1)` */
  countsText(): string {
    const of = this.total > 0 ? `/${this.total}` : '';
    const failed = this.failed !== null ? ` (done ${this.done}, failed ${this.failed})` : '';
    return `${this.settled}${of}${failed}`;
  }

  rateText(nowMs: number, finished = false): string {
    const rate = this.ratePerS(nowMs, finished);
    return `${rate === null ? '-' : formatRate(rate)} ${this.unit}/s`;
  }

  etaText(nowMs: number): string {
    const eta = this.etaS(nowMs);
    return eta === null ? '?' : formatSeconds(eta);
  }

  line(nowMs: number, finished: boolean): string {
    const parts = [this.countsText(), this.rateText(nowMs, finished)];
    if (finished) parts.push(`finished in ${formatSeconds((nowMs - this.startMs) / 1000)}`);
    else parts.push(`ETA ${this.etaText(nowMs)}`, `${formatSeconds((nowMs - this.startMs) / 1000)} elapsed`);
    if (this.note !== '') parts.push(this.note);
    return `${this.label}: ${parts.join(', ')}`;
  }
}

interface Renderer {
  /** The state changed. */
  render(): void;
  /** A message line. */
  log(line: string): void;
  /** The last state; the line is released. */
  finish(): void;
}

function progressOf(state: ProgressState, stream: ProgressStream, now: () => number, r: Renderer): Progress {
  let stopped = false;
  return {
    update(c) {
      if (stopped) return;
      state.apply(c, now());
      r.render();
    },
    increment(by = 1) {
      if (stopped) return;
      state.apply({ done: state.done + by }, now());
      r.render();
    },
    log(message) {
      if (stopped) stream.write(`${message}\n`);
      else r.log(message);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      r.finish();
    },
  };
}

function plainProgress(state: ProgressState, stream: ProgressStream, now: () => number, intervalMs: number, showAfterMs: number): Progress {
  let lastLineMs: number | null = null;
  const writeLine = (finished: boolean): void => {
    const t = now();
    lastLineMs = t;
    stream.write(`${state.line(t, finished)}\n`);
  };
  const writeIfDue = (): void => {
    const t = now();
    const due = lastLineMs === null ? t - state.startMs >= showAfterMs : t - lastLineMs >= intervalMs;
    if (due) writeLine(false);
  };
  writeIfDue();
  // Lines while no update comes (one long step); update() also checks, for
  // work that holds the event loop between updates (model generation).
  const heartbeat = setInterval(writeIfDue, Math.min(intervalMs, showAfterMs || intervalMs));
  heartbeat.unref();
  return progressOf(state, stream, now, {
    render: writeIfDue,
    log: (line) => stream.write(`${line}\n`),
    finish: () => {
      clearInterval(heartbeat);
      // Silent work stays silent: no last line for work that never showed.
      if (lastLineMs !== null) writeLine(true);
    },
  });
}

/** cli-progress redraws at most this often (its default 10 fps). */
const LIVE_REDRAW_MS = 100;

function liveProgress(state: ProgressState, stream: ProgressStream, now: () => number, showAfterMs: number): Progress {
  // A MultiBar with one bar, for its log(): messages print above the line
  // instead of tearing it. Its own timer redraws while the event loop is
  // free; redraw() below also draws from work that holds the loop (model
  // generation), which the timer alone would leave frozen.
  const bars = new cliProgress.MultiBar({
    stream: stream as NodeJS.WritableStream,
    format: '{label} [{bar}] {counts} | {rate} | {tail}{note}',
    barsize: 24,
    hideCursor: true,
    fps: 1000 / LIVE_REDRAW_MS,
    // Not gracefulExit: its SIGINT handler would keep Ctrl-C from ending the process.
    gracefulExit: false,
  });
  const payload = (finished = false): Record<string, string> => {
    const t = now();
    return {
      label: state.label,
      counts: state.countsText(),
      rate: state.rateText(t, finished),
      tail: finished ? `finished in ${formatSeconds((t - state.startMs) / 1000)}` : `ETA ${state.etaText(t)}`,
      note: state.note === '' ? '' : ` | ${state.note}`,
    };
  };
  let bar: cliProgress.SingleBar | null = null;
  let lastRedrawMs = -Infinity;
  const startIfDue = (): boolean => {
    if (bar === null && now() - state.startMs >= showAfterMs) bar = bars.create(state.total, state.settled, payload());
    return bar !== null;
  };
  const redraw = (force: boolean): void => {
    if (bar === null) return;
    bar.setTotal(state.total);
    bar.update(state.settled, payload());
    const t = Date.now();
    if (force || t - lastRedrawMs >= LIVE_REDRAW_MS) {
      lastRedrawMs = t;
      bars.update();
    }
  };
  // Without an update (one long step) a deferred line would never start.
  const deferred = showAfterMs > 0 ? setTimeout(startIfDue, showAfterMs) : null;
  deferred?.unref();
  startIfDue();
  return progressOf(state, stream, now, {
    render: () => {
      if (startIfDue()) redraw(false);
    },
    log: (line) => {
      if (bar === null) {
        stream.write(`${line}\n`);
        return;
      }
      bars.log(`${line}\n`);
      redraw(true);
    },
    finish: () => {
      if (deferred !== null) clearTimeout(deferred);
      if (bar === null) return;
      bar.setTotal(state.total);
      bar.update(state.settled, payload(true));
      bars.update(); // flushes pending log lines, which stop() would not
      bars.stop();
    },
  });
}

function formatRate(perS: number): string {
  if (perS >= 100) return perS.toFixed(0);
  if (perS >= 10) return perS.toFixed(1);
  return perS.toFixed(2);
}

/** 42s, 3m05s, 1h02m */
export function formatSeconds(s: number): string {
  const total = Math.round(s);
  if (total < 60) return `${total}s`;
  const m = Math.floor(total / 60);
  if (m < 60) return `${m}m${String(total % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
