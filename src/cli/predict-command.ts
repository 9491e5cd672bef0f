import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { loadConfig } from '../config/config.js';
import { ModelRunner } from '../engine/model-runner.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { createLogger } from '../util/logger.js';
import { UsageError } from './exit-codes.js';
import { withGpu } from './gpu-session.js';
import { parseIdMatrix } from './options.js';

function rows(flat: Float32Array, width: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < flat.length; i += width) out.push(Array.from(flat.subarray(i, i + width)));
  return out;
}

export function registerPredict(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('predict')
    .description('run the encoder on token ids and print {last_hidden_state, pooler_output, logits} as JSON')
    .option('--model <dir>', 'Hugging Face BERT checkpoint directory (default: model.dir from config)')
    .option('--input-ids <json>', "ragged rows of token ids, e.g. '[[101, 7, 9, 102], [101, 5, 102]]'")
    .option('--input-ids-file <file>', 'file holding the same JSON')
    .option('--token-type-ids <json>', 'segment ids, same shape as the input ids')
    .option('--dtype <t>', 'f32 | f16 (default: model.dtype from config)')
    .option('--config <file>', 'YAML configuration file')
    .action((o: Record<string, string | undefined>) =>
      run(async () => {
        const config = loadConfig({
          file: o['config'],
          env: process.env,
          overrides: { 'model.dir': o['model'], 'model.dtype': o['dtype'] },
        });
        if (!config.model.dir) throw new UsageError('--model <dir> is required (or model.dir in the config)');
        if ((o['inputIds'] === undefined) === (o['inputIdsFile'] === undefined)) {
          throw new UsageError('give exactly one of --input-ids or --input-ids-file');
        }
        let idsText = o['inputIds'];
        if (idsText === undefined) {
          try {
            idsText = await readFile(o['inputIdsFile']!, 'utf8');
          } catch (err) {
            throw new UsageError(`--input-ids-file: cannot read ${o['inputIdsFile']}: ${(err as Error).message}`);
          }
        }
        const inputIds = parseIdMatrix('--input-ids', idsText);
        const tokenTypeIds = o['tokenTypeIds'] === undefined ? undefined : parseIdMatrix('--token-type-ids', o['tokenTypeIds']);
        const logger = createLogger(config.log.level);
        const checkpoint = await loadCheckpoint(config.model.dir);
        const output = await withGpu(config, logger, async (ctx) => {
          const runner = await ModelRunner.create(ctx, checkpoint, { dtype: config.model.dtype, logger });
          try {
            const r = await runner.run({ inputIds, tokenTypeIds }, { lastHiddenState: true, pooled: true, logits: true });
            const H = checkpoint.config.hiddenSize;
            const result: Record<string, unknown> = {
              last_hidden_state: r.lastHiddenState!.map((seq) => rows(seq, H)),
              pooler_output: rows(r.pooled!, H),
            };
            if (r.logits) result['logits'] = rows(r.logits, checkpoint.numLabels);
            return result;
          } finally {
            await runner.dispose();
          }
        });
        process.stdout.write(`${JSON.stringify(output)}\n`);
      }),
    );
}
