import { createHash } from 'node:crypto';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../util/logger.js';

/**
 * Redis connections of the batch queue. BullMQ 6 loads the same top-level
 * `ioredis` (6.x) we import — it has no copy of its own — so we build the
 * clients and hand the instances to BullMQ, which adapts them
 * (createIORedisClient); one code path for our keys and BullMQ's.
 */

/**
 * 'api': the HTTP server. Commands fail at once while disconnected (no offline
 * queue, one retry, a command timeout) so a batch route answers 503 promptly
 * instead of hanging; online inference never touches Redis.
 * 'worker': retries forever and replays commands cut by a dropped connection
 * after reconnecting — safe because every write of ours is idempotent
 * (HSETNX per item), and BullMQ requires maxRetriesPerRequest null here.
 */
export type RedisRole = 'api' | 'worker';

const API_COMMAND_TIMEOUT_MS = 5000;

export function createRedis(url: string, role: RedisRole, opts: { name: string; logger: Logger }): Redis {
  const common: RedisOptions = {
    connectionName: opts.name,
    // ioredis 6 speaks RESP3 by default; BullMQ 6.7 is built and tested on
    // ioredis 5 (RESP2). RESP3's legacy reply mapping is meant to be identical,
    // but pinning RESP2 keeps the wire exactly what BullMQ's scripts expect.
    protocol: 2,
    // Reconnect quickly at first, then every 2 s: workers should resume soon after Redis returns.
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
  };
  const options: RedisOptions =
    role === 'api'
      ? { ...common, enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: API_COMMAND_TIMEOUT_MS, connectTimeout: 3000 }
      : { ...common, maxRetriesPerRequest: null, enableOfflineQueue: true };
  const client = new Redis(url, options);
  // Without a listener ioredis prints every reconnect failure; log state changes once instead.
  let lastError = '';
  client.on('error', (err: Error) => {
    const text = err.message;
    if (text !== lastError) opts.logger.warn({ redis: redactRedisUrl(url), err: text }, 'redis connection error');
    lastError = text;
  });
  client.on('ready', () => {
    if (lastError !== '') opts.logger.info({ redis: redactRedisUrl(url) }, 'redis connection restored');
    lastError = '';
  });
  return client;
}

/** The URL without its password, for logs and error messages. */
export function redactRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable redis url)';
  }
}

/**
 * The client can send a command now. Its status stays 'ready' for a moment
 * after Redis has closed the socket (until ioredis handles the close), so the
 * socket is checked as well: a command sent then fails with "Stream isn't
 * writeable" although a reconnect is only milliseconds away.
 */
export function isConnected(client: Redis): boolean {
  const stream = (client as unknown as { stream?: { writable?: boolean; writableEnded?: boolean } }).stream;
  return client.status === 'ready' && stream?.writable === true && stream.writableEnded !== true;
}

/** Resolve once the client is connected (see isConnected), or reject after `timeoutMs`. */
export async function waitForRedis(client: Redis, timeoutMs: number): Promise<void> {
  if (isConnected(client)) return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('ready', onReady);
      reject(new Error(`not connected after ${timeoutMs} ms (status ${client.status})`));
    }, timeoutMs);
    const onReady = (): void => {
      clearTimeout(timer);
      resolve();
    };
    client.once('ready', onReady);
  });
}

/** A Lua script run by EVALSHA, loaded on first use and again after a Redis restart (NOSCRIPT). */
export class LuaScript {
  readonly sha: string;
  constructor(
    readonly name: string,
    readonly source: string,
  ) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  async run(client: Redis, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return client.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}

/** Delete every key under `prefix` (BullMQ's and the store's): test and benchmark clean-up. */
export async function deletePrefix(admin: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await admin.del(...keys);
  } while (cursor !== '0');
}
