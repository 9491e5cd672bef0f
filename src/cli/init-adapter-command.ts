import type { Command } from 'commander';
import { writeRandomPeftLora } from '../pet/formats/peft-writer.js';
import { UsageError } from './exit-codes.js';
import { parseNumberOption } from './init-pet-command.js';
import { parseIntOption } from './options.js';

/** A comma-separated list option: trimmed, no empty entries. */
function parseListOption(flag: string, value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const entries = value.split(',').map((entry) => entry.trim());
  if (entries.some((entry) => entry === '')) throw new UsageError(`${flag} must be a comma-separated list of module names, got '${value}'`);
  return entries;
}

export function registerInitAdapter(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('init-adapter')
    .description('write a random Hugging Face PEFT LoRA adapter (CAUSAL_LM) for a Llama, Qwen2, Mistral, GPT-2 or BLOOM checkpoint')
    .requiredOption('--model <dir>', 'base model checkpoint directory (its config.json is read)')
    .requiredOption('--out <dir>', 'output directory (created if missing)')
    .requiredOption('--rank <r>', 'LoRA rank r (>= 1)')
    .option('--alpha <a>', 'lora_alpha', '8')
    .option('--target-modules <list>', "comma-separated PEFT target_modules, e.g. q_proj,v_proj (default: PEFT's for the model type)")
    .option('--rslora', 'rsLoRA scaling alpha / sqrt(r)')
    .option('--modules-to-save <list>', 'comma-separated modules saved whole, e.g. lm_head')
    .option('--seed <s>', 'random seed', '0')
    .option('--dtype <t>', 'adapter tensor dtype: f32 | f16', 'f32')
    .action((o: Record<string, string | boolean | undefined>) =>
      run(async () => {
        const str = (key: string): string | undefined => (typeof o[key] === 'string' ? o[key] : undefined);
        const rank = parseIntOption('--rank', str('rank'), 1);
        const alpha = parseNumberOption('--alpha', str('alpha')!);
        if (alpha === 0) throw new UsageError(`--alpha must be non-zero, got '${str('alpha')}'`);
        const seed = parseIntOption('--seed', str('seed'));
        const dtype = str('dtype')!;
        if (dtype !== 'f32' && dtype !== 'f16') throw new UsageError(`--dtype must be f32 or f16, got '${dtype}'`);
        const targetModules = parseListOption('--target-modules', str('targetModules'));
        const modulesToSave = parseListOption('--modules-to-save', str('modulesToSave'));
        const result = await writeRandomPeftLora(str('out')!, {
          modelDir: str('model')!,
          rank,
          alpha,
          useRslora: o['rslora'] === true,
          seed,
          dtype,
          ...(targetModules ? { targetModules } : {}),
          ...(modulesToSave ? { modulesToSave } : {}),
        });
        process.stdout.write(
          `${JSON.stringify({
            out: str('out'),
            rank,
            alpha,
            seed,
            lora_modules: result.loraModules.length,
            saved_modules: result.savedModules.length,
            tensors: result.tensorCount,
            parameters: result.parameterCount,
          })}\n`,
        );
      }),
    );
}
