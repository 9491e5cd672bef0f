import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs on stderr, so that CLI commands keep stdout for their
 * machine-readable result.
 */
export function createLogger(level: string = 'info'): Logger {
  return pino({ level, base: { app: 'petserve' } }, pino.destination(2));
}

/** A logger that drops everything (tests, library use). */
export const silentLogger: Logger = pino({ level: 'silent' });
