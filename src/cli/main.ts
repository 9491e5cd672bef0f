import { Command, CommanderError } from 'commander';
import { registerBatch } from './batch-command.js';
import { registerConvertPet } from './convert-pet-command.js';
import { registerGenerate } from './generate-command.js';
import { exitCodeFor } from './exit-codes.js';
import { registerInitAdapter } from './init-adapter-command.js';
import { registerInitModel } from './init-model-command.js';
import { registerInitPet } from './init-pet-command.js';
import { registerPredict } from './predict-command.js';
import { registerProfile } from './profile-command.js';
import { registerServe } from './serve-command.js';
import { registerWorker } from './worker-command.js';

/** Entry point of the `petserve` command; returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  const run = async (fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      exitCode = exitCodeFor(err);
      const name = err instanceof Error ? err.name : 'Error';
      const message = err instanceof Error ? err.message : String(err);
      process.stderr.write(`petserve: ${name}: ${message}\n`);
    }
  };
  const program = new Command()
    .name('petserve')
    .description('Serve many parameter-efficient fine-tuned tasks over one shared BERT on WebGPU')
    .exitOverride()
    .showHelpAfterError();
  registerInitModel(program, run);
  registerPredict(program, run);
  registerGenerate(program, run);
  registerInitPet(program, run);
  registerInitAdapter(program, run);
  registerConvertPet(program, run);
  registerServe(program, run);
  registerWorker(program, run);
  registerBatch(program, run);
  registerProfile(program, run);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    throw err;
  }
  return exitCode;
}
