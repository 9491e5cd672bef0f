import { join } from 'node:path';
import type { Command } from 'commander';
import { initModel, type CheckpointDtype } from '../model/init-model.js';
import { PRESET_NAMES, isPresetName } from '../model/presets.js';
import { UsageError } from './exit-codes.js';
import { parseIntOption } from './options.js';
import { startPhasedProgress } from './progress.js';

export function registerInitModel(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('init-model')
    .description('write a random-weight BERT checkpoint in Hugging Face layout (config.json, model.safetensors, tokenizer.json)')
    .requiredOption('--preset <name>', `architecture: ${PRESET_NAMES.join(' | ')}`)
    .requiredOption('--out <dir>', 'output directory (created if missing)')
    .option('--num-labels <n>', 'add a sequence-classification head with n labels', '0')
    .option('--seed <s>', 'random seed', '0')
    .option('--dtype <t>', 'tensor dtype on disk: f32 | f16 | bf16', 'f32')
    .option('--vocab-size <n>', 'override the vocabulary size (small test models)')
    .option('--max-positions <n>', 'override max_position_embeddings')
    .action((o: Record<string, string | undefined>) =>
      run(async () => {
        const preset = o['preset']!;
        if (!isPresetName(preset)) throw new UsageError(`--preset must be one of ${PRESET_NAMES.join(', ')}, got '${preset}'`);
        const dtype = o['dtype']!;
        if (!['f32', 'f16', 'bf16'].includes(dtype)) throw new UsageError(`--dtype must be f32, f16 or bf16, got '${dtype}'`);
        // Two lines, generating then writing, when it takes long enough to notice (bert-base: ~25 s here).
        const progress = startPhasedProgress(
          (phase: 'generate' | 'write') =>
            `petserve: init-model ${preset}: ${phase === 'generate' ? 'generating tensors' : `writing ${join(o['out']!, 'model.safetensors')}`}`,
          { unit: 'tensors', showAfterMs: 1000 },
        );
        const result = await initModel({
          onProgress: (phase, done, total) => progress.report(phase, done, total),
          preset,
          outDir: o['out']!,
          numLabels: parseIntOption('--num-labels', o['numLabels'], 0),
          seed: parseIntOption('--seed', o['seed']),
          dtype: dtype as CheckpointDtype,
          vocabSize: o['vocabSize'] === undefined ? undefined : parseIntOption('--vocab-size', o['vocabSize'], 1),
          maxPositions: o['maxPositions'] === undefined ? undefined : parseIntOption('--max-positions', o['maxPositions'], 1),
        }).finally(() => progress.stop());
        process.stdout.write(`${JSON.stringify({ out: o['out'], preset, parameters: result.parameterCount })}\n`);
      }),
    );
}
