/**
 * OpenAI's `stop`: generation ends where one of up to four strings appears in
 * the decoded text, and the client never sees the stop string or anything
 * after it. Text arrives in pieces, so the tail that could still grow into a
 * stop string is held back until the next piece settles it.
 */

import { InvalidInputError } from '../../util/errors.js';

export const MAX_STOP_STRINGS = 4;
/** In UTF-16 code units; the held-back tail is always shorter than this. */
export const MAX_STOP_LENGTH = 256;

/** The request's `stop` as a list: null/undefined → [], a string → [it]. Throws InvalidInputError naming `stop`. */
export function validateStops(stop: string | readonly string[] | null | undefined): string[] {
  if (stop === null || stop === undefined) return [];
  const list: readonly unknown[] = typeof stop === 'string' ? [stop] : stop;
  if (!Array.isArray(list)) {
    throw new InvalidInputError('stop must be a string, an array of strings or null');
  }
  if (list.length > MAX_STOP_STRINGS) {
    throw new InvalidInputError(`stop may hold at most ${MAX_STOP_STRINGS} strings, got ${list.length}`);
  }
  return list.map((entry, i) => {
    const where = typeof stop === 'string' ? 'stop' : `stop[${i}]`;
    if (typeof entry !== 'string') throw new InvalidInputError(`${where} must be a string`);
    if (entry.length === 0) throw new InvalidInputError(`${where} must not be empty`);
    if (entry.length > MAX_STOP_LENGTH) {
      throw new InvalidInputError(`${where} must be at most ${MAX_STOP_LENGTH} characters, got ${entry.length}`);
    }
    return entry;
  });
}

/**
 * Incremental stop-string detection over streamed text.
 *
 * When several stop strings occur, the one that COMPLETES first wins (on a
 * tie of end positions, the longer one, which starts earlier), and the text
 * is cut where it starts. That is what a server checking after every token
 * sees, and it makes the output independent of how the text was split into
 * pieces: with stops ["abcd", "bc"], "abcd" yields "a" whether it arrives
 * whole or one character at a time.
 */
export class StopStringMatcher {
  private readonly stops: readonly string[];
  /** Decoded but not yet emitted: the longest tail that is a proper prefix of a stop string. */
  private held = '';
  private stopped = false;

  /** `stops` as returned by validateStops. */
  constructor(stops: readonly string[]) {
    if (stops.some((stop) => stop.length === 0)) {
      throw new RangeError('an empty stop string would stop before the first character');
    }
    this.stops = [...stops];
  }

  /**
   * Feed newly decoded text. Returns what is safe to emit now and whether a
   * stop string completed; after a stop, nothing more is ever emitted.
   */
  push(text: string): { emit: string; stopped: boolean } {
    if (this.stopped) return { emit: '', stopped: true };
    // A stop string that reaches back into emitted text would have started
    // inside the held tail, so held + text is all that needs searching.
    const pending = this.held + text;
    const cut = firstCompletedStop(pending, this.stops);
    if (cut !== -1) {
      this.stopped = true;
      this.held = '';
      return { emit: pending.slice(0, cut), stopped: true };
    }
    const holdLength = longestTailThatStartsAStop(pending, this.stops);
    this.held = pending.slice(pending.length - holdLength);
    return { emit: pending.slice(0, pending.length - holdLength), stopped: false };
  }

  /** End of generation without a stop: the held-back tail, which can no longer become a stop string. */
  flush(): string {
    const rest = this.held;
    this.held = '';
    return rest;
  }
}

/** Where the first-completing stop string starts in `text`, or -1. */
function firstCompletedStop(text: string, stops: readonly string[]): number {
  let bestStart = -1;
  let bestEnd = Infinity;
  for (const stop of stops) {
    const start = text.indexOf(stop);
    if (start === -1) continue;
    const end = start + stop.length;
    if (end < bestEnd || (end === bestEnd && start < bestStart)) {
      bestStart = start;
      bestEnd = end;
    }
  }
  return bestStart;
}

/** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
function longestTailThatStartsAStop(text: string, stops: readonly string[]): number {
  let best = 0;
  for (const stop of stops) {
    for (let length = Math.min(stop.length - 1, text.length); length > best; length--) {
      if (tailEquals(text, stop, length)) {
        best = length;
        break;
      }
    }
  }
  return best;
}

function tailEquals(text: string, stop: string, length: number): boolean {
  const offset = text.length - length;
  for (let j = 0; j < length; j++) {
    if (text.charCodeAt(offset + j) !== stop.charCodeAt(j)) return false;
  }
  return true;
}
