import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { loadConfig } from '../config/config.js';
import { ModelRunner, type TaskRow } from '../engine/model-runner.js';
import { encoderDtype } from '../runtime/dtype-choice.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { TaskRegistry } from '../pet/registry.js';
import { createLogger } from '../util/logger.js';
import { UsageError } from './exit-codes.js';
import { withGpu } from './gpu-session.js';
import { parseIdMatrix, parseIntOption, parseJsonlObjects, parseTaskFlags } from './options.js';

function rows(flat: Float32Array, width: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < flat.length; i += width) out.push(Array.from(flat.subarray(i, i + width)));
  return out;
}

/** Parse a JSONL requests file: one {"task"?: NAME, "input_ids": [...], "token_type_ids"?: [...]} per line. */
function parseRequests(text: string, file: string, tasks: ReadonlyMap<string, string>): TaskRow[] {
  return parseJsonlObjects(text, file, (o, where) => {
    const task = o['task'] ?? null;
    if (task !== null && typeof task !== 'string') throw new UsageError(`${where}: "task" must be a string`);
    if (task !== null && !tasks.has(task)) throw new UsageError(`${where}: task '${task}' was not given with --task`);
    const ids = parseIdMatrix(`${where} input_ids`, JSON.stringify([o['input_ids']]))[0]!;
    const types =
      o['token_type_ids'] === undefined ? undefined : parseIdMatrix(`${where} token_type_ids`, JSON.stringify([o['token_type_ids']]))[0];
    return { task, inputIds: ids, tokenTypeIds: types };
  });
}

/** Cut rows into batches of at most `maxTokens` tokens (each row whole). */
function chunkByTokens(all: TaskRow[], maxTokens: number): TaskRow[][] {
  const chunks: TaskRow[][] = [];
  let cur: TaskRow[] = [];
  let tokens = 0;
  for (const r of all) {
    if (cur.length > 0 && tokens + r.inputIds.length > maxTokens) {
      chunks.push(cur);
      cur = [];
      tokens = 0;
    }
    cur.push(r);
    tokens += r.inputIds.length;
  }
  if (cur.length > 0) chunks.push(cur);
  return chunks;
}

export function registerPredict(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('predict')
    .description(
      'run the encoder on token ids. Single form: prints {last_hidden_state, pooler_output, logits}; ' +
        'with --requests: one JSON line per request, rows of many tasks batched together',
    )
    .option('--model <dir>', 'Hugging Face BERT checkpoint directory (default: model.dir from config)')
    .option('--input-ids <json>', "ragged rows of token ids, e.g. '[[101, 7, 9, 102], [101, 5, 102]]'")
    .option('--input-ids-file <file>', 'file holding the same JSON')
    .option('--token-type-ids <json>', 'segment ids, same shape as the input ids')
    .option('--pet <dir>', 'apply one PET (PEFT directory or PetServe bundle) to every row of the single form')
    .option('--task <name=dir>', 'register a task for --requests (repeatable)', (v: string, acc: string[]) => [...acc, v], [])
    .option('--requests <file>', 'JSONL: {"task": NAME, "input_ids": [...]} per line (no task: base model)')
    .option('--max-batch-tokens <n>', 'tokens per mixed batch for --requests', '8192')
    .option('--dtype <t>', 'auto | f32 | f16 (default: model.dtype from config)')
    .option('--config <file>', 'YAML configuration file')
    .action((o: Record<string, unknown>) =>
      run(async () => {
        const str = (k: string): string | undefined => o[k] as string | undefined;
        const config = loadConfig({
          file: str('config'),
          env: process.env,
          overrides: { 'model.dir': str('model'), 'model.dtype': str('dtype') },
        });
        if (!config.model.dir) throw new UsageError('--model <dir> is required (or model.dir in the config)');
        const taskFlags = parseTaskFlags(o['task'] as string[]);
        const requestsFile = str('requests');
        if (requestsFile !== undefined) {
          if (str('inputIds') !== undefined || str('inputIdsFile') !== undefined || str('pet') !== undefined) {
            throw new UsageError('--requests cannot be combined with --input-ids, --input-ids-file or --pet');
          }
          let text: string;
          try {
            text = await readFile(requestsFile, 'utf8');
          } catch (err) {
            throw new UsageError(`--requests: cannot read ${requestsFile}: ${(err as Error).message}`);
          }
          const requests = parseRequests(text, requestsFile, taskFlags);
          const maxTokens = parseIntOption('--max-batch-tokens', str('maxBatchTokens'), 1);
          await predictRequests(config, taskFlags, requests, maxTokens);
          return;
        }
        if (taskFlags.size > 0) throw new UsageError('--task is used with --requests (for one PET use --pet)');
        if ((str('inputIds') === undefined) === (str('inputIdsFile') === undefined)) {
          throw new UsageError('give exactly one of --input-ids or --input-ids-file (or --requests)');
        }
        let idsText = str('inputIds');
        if (idsText === undefined) {
          try {
            idsText = await readFile(str('inputIdsFile')!, 'utf8');
          } catch (err) {
            throw new UsageError(`--input-ids-file: cannot read ${str('inputIdsFile')}: ${(err as Error).message}`);
          }
        }
        const inputIds = parseIdMatrix('--input-ids', idsText);
        const tokenTypeIds = str('tokenTypeIds') === undefined ? undefined : parseIdMatrix('--token-type-ids', str('tokenTypeIds')!);
        await predictSingle(config, inputIds, tokenTypeIds, str('pet'));
      }),
    );
}

type Config = ReturnType<typeof loadConfig>;

async function predictSingle(config: Config, inputIds: number[][], tokenTypeIds: number[][] | undefined, petDir: string | undefined): Promise<void> {
  const logger = createLogger(config.log.level);
  const checkpoint = await loadCheckpoint(config.model.dir!);
  const registry = petDir ? new TaskRegistry(checkpoint, { logger, hostCacheBytes: config.pets.hostCacheBytes }) : undefined;
  if (registry && petDir) await registry.register('pet', petDir);
  const output = await withGpu(config, logger, async (ctx) => {
    const runner = await ModelRunner.create(ctx, checkpoint, { dtype: await encoderDtype(ctx, config.model.dtype, checkpoint, logger, config.kernels.cacheDir), logger, registry, poolBytes: config.pets.poolBytes });
    try {
      const H = checkpoint.config.hiddenSize;
      const task = registry ? 'pet' : null;
      const r = await runner.runTasks(
        inputIds.map((ids, i) => ({ task, inputIds: ids, tokenTypeIds: tokenTypeIds?.[i] })),
        { lastHiddenState: true, pooled: true, logits: true },
      );
      const result: Record<string, unknown> = {
        last_hidden_state: r.rows.map((row) => rows(row.lastHiddenState!, H)),
        pooler_output: r.rows.map((row) => Array.from(row.pooled!)),
      };
      if (r.rows[0]?.logits) result['logits'] = r.rows.map((row) => Array.from(row.logits!));
      return result;
    } finally {
      await runner.dispose();
    }
  });
  process.stdout.write(`${JSON.stringify(output)}\n`);
}

async function predictRequests(config: Config, tasks: ReadonlyMap<string, string>, requests: TaskRow[], maxTokens: number): Promise<void> {
  const logger = createLogger(config.log.level);
  const checkpoint = await loadCheckpoint(config.model.dir!);
  const registry = new TaskRegistry(checkpoint, { logger, hostCacheBytes: config.pets.hostCacheBytes });
  for (const [name, dir] of tasks) await registry.register(name, dir);
  const lines = await withGpu(config, logger, async (ctx) => {
    const runner = await ModelRunner.create(ctx, checkpoint, { dtype: await encoderDtype(ctx, config.model.dtype, checkpoint, logger, config.kernels.cacheDir), logger, registry, poolBytes: config.pets.poolBytes });
    try {
      const out: string[] = [];
      for (const chunk of chunkByTokens(requests, maxTokens)) {
        const r = await runner.runTasks(chunk, { pooled: true, logits: true });
        chunk.forEach((req, i) => {
          const row = r.rows[i]!;
          const line: Record<string, unknown> = { task: req.task };
          if (row.logits) line['logits'] = Array.from(row.logits);
          else line['pooler_output'] = Array.from(row.pooled!);
          out.push(JSON.stringify(line));
        });
      }
      return out;
    } finally {
      await runner.dispose();
    }
  });
  process.stdout.write(`${lines.join('\n')}\n`);
}
