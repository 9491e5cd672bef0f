import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { z } from 'zod';
import { loadConfig } from '../config/config.js';
import type { GenerateInput, GenerateOutput } from '../gateway/generation.js';
import { startGenerationRuntime } from '../runtime/generation-runtime.js';
import { createLogger } from '../util/logger.js';
import { UsageError } from './exit-codes.js';
import { withGpu } from './gpu-session.js';
import { parseJsonlObjects, parseTaskFlags } from './options.js';

/** One line of --requests (OpenAI-style field names). */
const requestLine = z.strictObject({
  task: z.string().nullish(),
  prompt: z.string().optional(),
  prompt_ids: z.array(z.number().int().nonnegative()).optional(),
  max_tokens: z.number().int().positive().optional(),
  temperature: z.number().optional(),
  top_p: z.number().optional(),
  top_k: z.number().int().optional(),
  min_p: z.number().optional(),
  presence_penalty: z.number().optional(),
  frequency_penalty: z.number().optional(),
  repetition_penalty: z.number().optional(),
  seed: z.number().int().nullish(),
  stop: z.union([z.string(), z.array(z.string())]).nullish(),
  logprobs: z.number().int().optional(),
  ignore_eos: z.boolean().optional(),
});
type RequestLine = z.infer<typeof requestLine>;

function toInput(r: RequestLine): GenerateInput {
  const sampling = Object.fromEntries(
    Object.entries({
      temperature: r.temperature,
      topP: r.top_p,
      topK: r.top_k,
      minP: r.min_p,
      presencePenalty: r.presence_penalty,
      frequencyPenalty: r.frequency_penalty,
      repetitionPenalty: r.repetition_penalty,
      seed: r.seed,
      logprobs: r.logprobs,
    }).filter(([, v]) => v !== undefined),
  );
  return {
    task: r.task ?? null,
    ...(r.prompt !== undefined ? { prompt: r.prompt } : {}),
    ...(r.prompt_ids !== undefined ? { promptIds: r.prompt_ids } : {}),
    ...(r.max_tokens !== undefined ? { maxTokens: r.max_tokens } : {}),
    sampling,
    stop: r.stop ?? null,
    ...(r.ignore_eos !== undefined ? { ignoreEos: r.ignore_eos } : {}),
  };
}

function parseRequests(text: string, file: string, tasks: ReadonlyMap<string, string>): RequestLine[] {
  return parseJsonlObjects(text, file, (o, where) => {
    const parsed = requestLine.safeParse(o);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new UsageError(`${where}: ${issue.path.join('.') || '(line)'}: ${issue.message}`);
    }
    const r = parsed.data;
    if ((r.prompt === undefined) === (r.prompt_ids === undefined)) throw new UsageError(`${where}: give exactly one of "prompt" or "prompt_ids"`);
    if (r.task != null && !tasks.has(r.task)) throw new UsageError(`${where}: task '${r.task}' was not given with --task`);
    return r;
  });
}

const outputLine = (task: string | null, o: GenerateOutput): string =>
  JSON.stringify({ task, text: o.text, token_ids: o.tokenIds, finish_reason: o.finishReason, usage: o.usage });

export function registerGenerate(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('generate')
    .description(
      'generate text with a causal decoder (Llama, Qwen2, Mistral, GPT-2, BLOOM) and any number of LoRA adapters. ' +
        'Single form: streams the text of --prompt to stdout; with --requests: one JSON line per request, in input order, ' +
        'all requests sharing continuous batches',
    )
    .requiredOption('--model <dir>', 'Hugging Face causal LM directory (config.json, model.safetensors, tokenizer.json)')
    .option('--task <name=dir>', 'register a PEFT LoRA adapter as task NAME (repeatable)', (v: string, acc: string[]) => [...acc, v], [])
    .option('--prompt <text>', 'one prompt, tokenized with the model tokenizer')
    .option('--requests <file>', 'JSONL: {"task"?, "prompt" | "prompt_ids", "max_tokens"?, "temperature"?, "seed"?, ...} per line')
    .option('--adapter <name>', 'the task to use for --prompt (default: the base model)')
    .option('--max-tokens <n>', 'tokens to generate (default: generation.defaultMaxTokens)')
    .option('--temperature <t>', 'sampling temperature (0 = greedy)', '0')
    .option('--seed <n>', 'seed of the sampling stream')
    .option('--dtype <t>', 'auto | f32 | f16 (default: model.dtype from config)')
    .option('--config <file>', 'YAML configuration file')
    .action((o: Record<string, unknown>) =>
      run(async () => {
        const str = (k: string): string | undefined => o[k] as string | undefined;
        const config = loadConfig({ file: str('config'), env: process.env, overrides: { 'model.dtype': str('dtype') } });
        const tasks = parseTaskFlags(o['task'] as string[]);
        const num = (flag: string, v: string | undefined, int: boolean): number | undefined => {
          if (v === undefined) return undefined;
          const n = Number(v);
          if (v.trim() === '' || !Number.isFinite(n) || (int && !Number.isSafeInteger(n))) throw new UsageError(`${flag} must be ${int ? 'an integer' : 'a number'}, got '${v}'`);
          return n;
        };
        const maxTokens = num('--max-tokens', str('maxTokens'), true);
        const temperature = num('--temperature', str('temperature'), false);
        const seed = num('--seed', str('seed'), true);
        const requestsFile = str('requests');
        if ((requestsFile === undefined) === (str('prompt') === undefined)) throw new UsageError('give exactly one of --prompt or --requests');
        let lines: RequestLine[] = [];
        if (requestsFile !== undefined) {
          if (str('adapter') !== undefined) throw new UsageError('--adapter is for --prompt; a requests line names its "task"');
          let text: string;
          try {
            text = await readFile(requestsFile, 'utf8');
          } catch (err) {
            throw new UsageError(`--requests: cannot read ${requestsFile}: ${(err as Error).message}`);
          }
          lines = parseRequests(text, requestsFile, tasks);
        } else if (str('adapter') !== undefined && !tasks.has(str('adapter')!)) {
          throw new UsageError(`--adapter ${str('adapter')} was not given with --task`);
        }
        const logger = createLogger(config.log.level);
        await withGpu(config, logger, async (ctx) => {
          const rt = await startGenerationRuntime(ctx, config, { modelDir: str('model')!, tasks });
          try {
            if (requestsFile === undefined) {
              const input: GenerateInput = {
                task: str('adapter') ?? null,
                prompt: str('prompt')!,
                sampling: { ...(temperature !== undefined ? { temperature } : {}), ...(seed !== undefined ? { seed } : {}) },
                onText: (delta) => process.stdout.write(delta),
                ...(maxTokens !== undefined ? { maxTokens } : {}),
              };
              const out = await rt.gateway.generate(input);
              process.stdout.write('\n');
              process.stderr.write(`${JSON.stringify({ finish_reason: out.finishReason, usage: out.usage, ttft_ms: Math.round(out.ttftMs), tpot_ms: Number(out.tpotMs.toFixed(2)) })}\n`);
              return;
            }
            // All lines at once: the step scheduler batches them; answers are written in input order.
            const inputs = lines.map((l) => {
              const input = toInput(l);
              if (input.maxTokens === undefined && maxTokens !== undefined) input.maxTokens = maxTokens;
              if (l.temperature === undefined && temperature !== undefined) input.sampling = { ...input.sampling, temperature };
              if (l.seed === undefined && seed !== undefined) input.sampling = { ...input.sampling, seed };
              return input;
            });
            // Refuse bad lines before any work starts (prompt ids, lengths).
            inputs.forEach((input, i) => {
              try {
                rt.gateway.promptIds(input);
              } catch (err) {
                throw new UsageError(`${requestsFile}: request ${i + 1}: ${(err as Error).message}`);
              }
            });
            const outputs = await Promise.all(inputs.map((input) => rt.gateway.generate(input)));
            for (let i = 0; i < outputs.length; i++) process.stdout.write(`${outputLine(inputs[i]!.task ?? null, outputs[i]!)}\n`);
          } finally {
            await rt.close();
          }
        });
      }),
    );
}
