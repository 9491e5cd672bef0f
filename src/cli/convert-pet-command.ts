import type { Command } from 'commander';
import { loadCheckpoint } from '../model/checkpoint.js';
import { convertMergedToPet } from '../pet/convert.js';
import { writePetBundle } from '../pet/formats/bundle.js';
import { UsageError } from './exit-codes.js';
import { parseNumberOption } from './init-pet-command.js';

export function registerConvertPet(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('convert-pet')
    .description('turn a full fine-tuned checkpoint of the base model into a diff or bitfit PET bundle')
    .requiredOption('--base <dir>', 'base model checkpoint directory')
    .requiredOption('--finetuned <dir>', 'fine-tuned checkpoint directory (same architecture)')
    .requiredOption('--kind <kind>', 'diff | bitfit')
    .requiredOption('--out <dir>', 'output directory for pet.json + pet.safetensors')
    .option('--density <d>', 'diff: keep this fraction of each weight, largest |ΔW| first (default: every changed entry, at most 0.5)')
    .action((o: Record<string, string | undefined>) =>
      run(async () => {
        const kind = o['kind']!;
        if (kind !== 'diff' && kind !== 'bitfit') throw new UsageError(`--kind must be diff or bitfit, got '${kind}'`);
        const density = o['density'] === undefined ? undefined : parseNumberOption('--density', o['density']);
        if (density !== undefined && kind !== 'diff') throw new UsageError('--density applies to --kind diff only');
        const base = await loadCheckpoint(o['base']!);
        const finetuned = await loadCheckpoint(o['finetuned']!);
        const { bundle, notes } = convertMergedToPet({ base, finetuned, kind, density });
        const written = await writePetBundle(o['out']!, bundle, base.config);
        const sites =
          bundle.pet.kind === 'diff'
            ? bundle.pet.sites.length
            : bundle.pet.kind === 'bitfit'
              ? bundle.pet.params.biases.length +
                bundle.pet.params.layerNorms.length +
                (bundle.pet.params.embeddingsLayerNorm ? 1 : 0) +
                (bundle.pet.params.poolerBias ? 1 : 0)
              : 0;
        process.stdout.write(
          `${JSON.stringify({
            out: o['out'],
            kind,
            sites,
            num_labels: bundle.head ? bundle.head.id2label.length : 0,
            tensors: written.tensorCount,
            parameters: written.parameterCount,
            notes,
          })}\n`,
        );
      }),
    );
}
