import { describe, expect, it } from 'vitest';
import {
  MAX_STOP_LENGTH,
  StopStringMatcher,
  validateStops,
} from '../../../src/engine/generation/stop-strings.js';
import { InvalidInputError } from '../../../src/util/errors.js';
import { Rng } from '../../../src/util/random.js';

/** Everything a client would receive for `pieces`, and whether generation stopped. */
function stream(stops: readonly string[], pieces: readonly string[]): { text: string; stopped: boolean; emits: string[] } {
  const matcher = new StopStringMatcher(stops);
  const emits: string[] = [];
  for (const piece of pieces) {
    const { emit, stopped } = matcher.push(piece);
    emits.push(emit);
    if (stopped) return { text: emits.join(''), stopped: true, emits };
  }
  emits.push(matcher.flush());
  return { text: emits.join(''), stopped: false, emits };
}

/** The definition, checked one character at a time: cut at the first stop string to complete. */
function oracle(stops: readonly string[], text: string): { text: string; stopped: boolean } {
  for (let end = 1; end <= text.length; end++) {
    const completed = stops.filter((stop) => text.slice(0, end).endsWith(stop));
    if (completed.length > 0) {
      const longest = Math.max(...completed.map((stop) => stop.length));
      return { text: text.slice(0, end - longest), stopped: true };
    }
  }
  return { text, stopped: false };
}

describe('StopStringMatcher', () => {
  it('finds a stop string split across pushes and cuts before it', () => {
    const matcher = new StopStringMatcher(['llo']);
    expect(matcher.push('Hel')).toEqual({ emit: 'He', stopped: false });
    expect(matcher.push('lo world')).toEqual({ emit: '', stopped: true });
    expect(matcher.push('more')).toEqual({ emit: '', stopped: true });
    expect(matcher.flush()).toBe('');
  });

  it('emits text at once when no stop string could start in it', () => {
    const matcher = new StopStringMatcher(['###']);
    expect(matcher.push('plain text')).toEqual({ emit: 'plain text', stopped: false });
    expect(matcher.push(' then #')).toEqual({ emit: ' then ', stopped: false });
    expect(matcher.push('# and')).toEqual({ emit: '## and', stopped: false });
  });

  it('holds only the longest tail that can still become a stop string, through overlapping prefixes', () => {
    const matcher = new StopStringMatcher(['aab']);
    expect(matcher.push('a')).toEqual({ emit: '', stopped: false });
    expect(matcher.push('a')).toEqual({ emit: '', stopped: false });
    expect(matcher.push('a')).toEqual({ emit: 'a', stopped: false });
    expect(matcher.push('b')).toEqual({ emit: '', stopped: true });
    expect(stream(['abab'], ['ab', 'aab', 'ab'])).toEqual({ text: 'aba', stopped: true, emits: ['', 'aba', ''] });
  });

  it('stops at the stop string that completes first, whatever the split', () => {
    expect(stream(['world', 'lo'], ['hello world'])).toMatchObject({ text: 'hel', stopped: true });
    // "bc" completes before "abcd" does, token by token or all at once.
    expect(stream(['abcd', 'bc'], ['abcd'])).toMatchObject({ text: 'a', stopped: true });
    expect(stream(['abcd', 'bc'], ['a', 'b', 'c', 'd'])).toMatchObject({ text: 'a', stopped: true });
    // Completing together, the longer one starts earlier and wins.
    expect(stream(['bc', 'abc'], ['xab', 'c'])).toMatchObject({ text: 'x', stopped: true });
  });

  it('releases held-back text on flush when generation ends without a stop', () => {
    const matcher = new StopStringMatcher(['END', 'STOP']);
    expect(matcher.push('the ')).toEqual({ emit: 'the ', stopped: false });
    expect(matcher.push('ST')).toEqual({ emit: '', stopped: false });
    expect(matcher.push('E')).toEqual({ emit: 'ST', stopped: false });
    expect(matcher.flush()).toBe('E');
    expect(matcher.flush()).toBe('');
  });

  it('passes everything through with no stop strings', () => {
    expect(stream([], ['a', '', 'b'])).toEqual({ text: 'ab', stopped: false, emits: ['a', '', 'b', ''] });
  });

  it('handles unicode, including a stop string whose surrogate pair is split across pushes', () => {
    expect(stream(['👋'], ['Hi \uD83D', '\uDC4B there'])).toMatchObject({ text: 'Hi ', stopped: true });
    expect(stream(['。'], ['你好', '世界。再见'])).toMatchObject({ text: '你好世界', stopped: true });
    expect(stream(['ñu'], ['añ', 'o'])).toEqual({ text: 'año', stopped: false, emits: ['a', 'ño', ''] });
  });

  it('gives the same text as the one-character-at-a-time definition for any split', () => {
    const rng = new Rng(77);
    const alphabet = ['a', 'b', 'c', 'é', '🙂'];
    const word = (length: number): string => Array.from({ length }, () => alphabet[rng.int(0, alphabet.length)]!).join('');
    for (let trial = 0; trial < 500; trial++) {
      const stops = Array.from({ length: rng.int(1, 5) }, () => word(rng.int(1, 5)));
      const text = word(rng.int(0, 40));
      const pieces: string[] = [];
      for (let at = 0; at < text.length; ) {
        const next = Math.min(text.length, at + rng.int(0, 6));
        pieces.push(text.slice(at, next));
        at = next;
      }
      const expected = oracle(stops, text);
      expect(stream(stops, pieces), JSON.stringify({ stops, pieces })).toMatchObject(expected);
      expect(stream(stops, [text])).toMatchObject(expected);
    }
  });
});

describe('validateStops', () => {
  it('turns null, a string or an array into a list', () => {
    expect(validateStops(null)).toEqual([]);
    expect(validateStops(undefined)).toEqual([]);
    expect(validateStops('\n\n')).toEqual(['\n\n']);
    expect(validateStops(['a', 'b', 'c', 'd'])).toEqual(['a', 'b', 'c', 'd']);
    expect(validateStops([])).toEqual([]);
    expect(validateStops('x'.repeat(MAX_STOP_LENGTH))).toHaveLength(1);
  });

  it.each([
    ['more than four strings', ['a', 'b', 'c', 'd', 'e']],
    ['an empty string', ''],
    ['an empty entry', ['a', '']],
    ['an overlong string', 'x'.repeat(MAX_STOP_LENGTH + 1)],
    ['a non-string entry', ['a', 3]],
    ['a number', 3],
  ])('rejects %s, naming stop', (_, stop) => {
    const attempt = (): string[] => validateStops(stop as string[]);
    expect(attempt).toThrow(InvalidInputError);
    expect(attempt).toThrow(/^stop/);
  });
});
