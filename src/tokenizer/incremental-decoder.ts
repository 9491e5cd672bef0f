import type { TextTokenizer } from './text-tokenizer.js';

/**
 * Streams generated tokens as text. A token may end in the middle of a UTF-8
 * character (byte-level BPE) or change how the previous text decodes
 * (SentencePiece's leading-space rule), so the whole tail is decoded again
 * from a few tokens back and only the new suffix is emitted; a trailing
 * U+FFFD (an incomplete character) is held back until the next token
 * completes it, as transformers' TextStreamer does.
 */
export class IncrementalDecoder {
  private readonly ids: number[] = [];
  private emitted = '';

  constructor(private readonly tokenizer: TextTokenizer) {}

  /** Add one token; returns the text that became final. */
  push(id: number): string {
    this.ids.push(id);
    const text = this.tokenizer.decode(this.ids);
    if (text.endsWith('\uFFFD')) return '';
    return this.take(text);
  }

  /** End of the sequence: whatever is left (an incomplete character decodes as U+FFFD). */
  flush(): string {
    return this.take(this.tokenizer.decode(this.ids));
  }

  /** All text so far. */
  get text(): string {
    return this.emitted;
  }

  private take(text: string): string {
    if (!text.startsWith(this.emitted)) {
      // A decoder that rewrote earlier text (rare): emit nothing more than what extends it.
      const common = commonPrefix(text, this.emitted);
      this.emitted = text;
      return text.slice(common);
    }
    const delta = text.slice(this.emitted.length);
    this.emitted = text;
    return delta;
  }
}

function commonPrefix(a: string, b: string): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return Math.max(i, b.length);
}
