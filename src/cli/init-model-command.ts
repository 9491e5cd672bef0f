import { join } from 'node:path';
import type { Command } from 'commander';
import { DECODER_PRESET_NAMES, isDecoderPresetName } from '../model/decoder-presets.js';
import { initDecoderModel } from '../model/init-decoder.js';
import { initModel, type CheckpointDtype } from '../model/init-model.js';
import { PRESET_NAMES, isPresetName, type PresetName } from '../model/presets.js';

const ALL_PRESET_NAMES: readonly string[] = [...PRESET_NAMES, ...DECODER_PRESET_NAMES];
import { UsageError } from './exit-codes.js';
import { parseIntOption } from './options.js';
import { startPhasedProgress } from './progress.js';

export function registerInitModel(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('init-model')
    .description(
      'write a random-weight checkpoint in Hugging Face layout (config.json, model.safetensors, tokenizer.json): ' +
        'a BERT encoder, or a causal LM (Llama, Qwen2, Mistral, GPT-2, BLOOM) with a byte-level BPE tokenizer',
    )
    .requiredOption('--preset <name>', `architecture: ${ALL_PRESET_NAMES.join(' | ')}`)
    .requiredOption('--out <dir>', 'output directory (created if missing)')
    .option('--num-labels <n>', 'add a sequence-classification head with n labels (BERT presets)', '0')
    .option('--seed <s>', 'random seed', '0')
    .option('--dtype <t>', 'tensor dtype on disk: f32 | f16 | bf16', 'f32')
    .option('--vocab-size <n>', 'override the vocabulary size (small test models; decoders: BPE + special tokens)')
    .option('--max-positions <n>', 'override max_position_embeddings')
    .action((o: Record<string, string | undefined>) =>
      run(async () => {
        const preset = o['preset']!;
        const decoder = isDecoderPresetName(preset);
        if (!decoder && !isPresetName(preset)) {
          throw new UsageError(`--preset must be one of ${ALL_PRESET_NAMES.join(', ')}, got '${preset}'`);
        }
        const dtype = o['dtype']!;
        if (!['f32', 'f16', 'bf16'].includes(dtype)) throw new UsageError(`--dtype must be f32, f16 or bf16, got '${dtype}'`);
        const numLabels = parseIntOption('--num-labels', o['numLabels'], 0);
        if (decoder && numLabels > 0) throw new UsageError(`--num-labels applies to the BERT presets, not the causal LM '${preset}'`);
        const common = {
          onProgress: (phase: 'generate' | 'write', done: number, total: number) => progress.report(phase, done, total),
          outDir: o['out']!,
          seed: parseIntOption('--seed', o['seed']),
          dtype: dtype as CheckpointDtype,
          vocabSize: o['vocabSize'] === undefined ? undefined : parseIntOption('--vocab-size', o['vocabSize'], 1),
          maxPositions: o['maxPositions'] === undefined ? undefined : parseIntOption('--max-positions', o['maxPositions'], 1),
        };
        // Two lines, generating then writing, when it takes long enough to notice (bert-base: ~25 s here).
        const progress = startPhasedProgress(
          (phase: 'generate' | 'write') =>
            `petserve: init-model ${preset}: ${phase === 'generate' ? 'generating tensors' : `writing ${join(o['out']!, 'model.safetensors')}`}`,
          { unit: 'tensors', showAfterMs: 1000 },
        );
        const summary = await (isDecoderPresetName(preset)
          ? initDecoderModel({ ...common, preset }).then((r) => ({
              parameters: r.parameterCount,
              vocab_size: r.vocabSize,
              bos_token_id: r.bosTokenId,
              eos_token_id: r.eosTokenId,
            }))
          : initModel({ ...common, preset: preset as PresetName, numLabels }).then((r) => ({ parameters: r.parameterCount }))
        ).finally(() => progress.stop());
        process.stdout.write(`${JSON.stringify({ out: o['out'], preset, ...summary })}\n`);
      }),
    );
}
