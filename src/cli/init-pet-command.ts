import type { Command } from 'commander';
import { loadCheckpoint } from '../model/checkpoint.js';
import { initPet } from '../pet/init-pet.js';
import { PET_KINDS, initOptionHelp, isPetKind, peftInitKinds } from '../pet/kinds/index.js';
import { UsageError } from './exit-codes.js';
import { parseIntOption } from './options.js';

/** A finite number option; range checks belong to the command it feeds. */
export function parseNumberOption(flag: string, value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${flag} must be a number, got '${value}'`);
  return n;
}

export function registerInitPet(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('init-pet')
    .description(
      `write a random PET for a base model: ${peftInitKinds().join(' and ')} as a Hugging Face PEFT directory, other kinds as a PetServe bundle`,
    )
    .requiredOption('--model <dir>', 'base model checkpoint directory (config.json + model.safetensors)')
    .requiredOption('--kind <kind>', PET_KINDS.join(' | '))
    .requiredOption('--out <dir>', 'output directory (created if missing)')
    .option('--rank <r>', initOptionHelp('rank'))
    .option('--density <d>', initOptionHelp('density'))
    .option('--seed <s>', 'random seed', '0')
    .option('--num-labels <n>', "classifier labels, 0 for an embedding task (default: the base model's, or 2)")
    .option('--bottleneck <m>', initOptionHelp('bottleneck'))
    .action((o: Record<string, string | undefined>) =>
      run(async () => {
        const kind = o['kind']!;
        if (!isPetKind(kind)) {
          throw new UsageError(`--kind must be one of ${PET_KINDS.join(', ')}, got '${kind}'`);
        }
        const seed = parseIntOption('--seed', o['seed']);
        const rank = o['rank'] === undefined ? undefined : parseIntOption('--rank', o['rank'], 1);
        const density = o['density'] === undefined ? undefined : parseNumberOption('--density', o['density']);
        const numLabels = o['numLabels'] === undefined ? undefined : parseIntOption('--num-labels', o['numLabels'], 0);
        const bottleneck = o['bottleneck'] === undefined ? undefined : parseIntOption('--bottleneck', o['bottleneck'], 1);
        const model = await loadCheckpoint(o['model']!);
        const result = await initPet({ model, kind, outDir: o['out']!, rank, density, seed, numLabels, bottleneck });
        const head = result.bundle.head;
        process.stdout.write(
          `${JSON.stringify({
            out: o['out'],
            kind,
            format: result.format,
            seed,
            num_labels: head ? head.id2label.length : 0,
            tensors: result.tensorCount,
            parameters: result.parameterCount,
          })}\n`,
        );
      }),
    );
}
