// Chat messages → prompt text with the model's own chat template
// (tokenizer_config.json `chat_template`), rendered by @huggingface/jinja the
// way transformers' apply_chat_template renders it.

import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { readCheckpointJson } from '../model/checkpoint.js';
import { PetServeError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';
import { TOKENIZER_CONFIG_FILE } from './text-tokenizer.js';

export interface ChatMessage {
  role: string;
  content: string;
  name?: string;
}

/**
 * The template used when a checkpoint has none: ChatML (Qwen2's spelling),
 * each message as `<|im_start|>role\ncontent<|im_end|>\n`, then the
 * assistant's opening when a generation prompt is asked for. It adds no BOS;
 * models that need one carry their own template.
 */
export const FALLBACK_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** The template could not render these messages (it raised, or failed to evaluate): the client's 400. */
export class ChatTemplateError extends PetServeError {
  /** The request field at fault, as OpenAI's error `param` names it. */
  readonly param = 'messages';
  constructor(reason: string) {
    // Jinja and raise_exception() messages come from the template's author, not the request; cut long ones.
    super('CHAT_TEMPLATE_FAILED', `messages: the model's chat template cannot render them (${reason.slice(0, 300)})`);
  }
}

/** The special-token variables transformers passes to a template (special_tokens_map). */
const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'pad_token'] as const;

export class ChatTemplate {
  private constructor(
    private readonly template: Template | null,
    private readonly parseError: string | null,
    private readonly specialTokens: Readonly<Record<string, string>>,
    /** 'model': the checkpoint's own template; 'fallback': FALLBACK_CHAT_TEMPLATE. */
    readonly source: 'model' | 'fallback',
  ) {}

  /** The chat template of checkpoint `dir` (FALLBACK_CHAT_TEMPLATE when it declares none). */
  static async load(dir: string): Promise<ChatTemplate> {
    const path = join(dir, TOKENIZER_CONFIG_FILE);
    const config = (await pathExists(path)) ? await readCheckpointJson(path) : {};
    return ChatTemplate.fromTokenizerConfig(typeof config === 'object' && config !== null ? (config as Record<string, unknown>) : {});
  }

  static fromTokenizerConfig(config: Record<string, unknown>): ChatTemplate {
    const own = templateText(config['chat_template']);
    const specialTokens: Record<string, string> = {};
    for (const key of SPECIAL_TOKEN_KEYS) {
      const token = tokenContent(config[key]);
      if (token !== null) specialTokens[key] = token;
    }
    const text = own ?? FALLBACK_CHAT_TEMPLATE;
    try {
      return new ChatTemplate(new Template(text), null, specialTokens, own === null ? 'fallback' : 'model');
    } catch (err) {
      // A template this Jinja cannot parse fails chat requests (400), not the server: completions still work.
      return new ChatTemplate(null, (err as Error).message, specialTokens, 'model');
    }
  }

  /** Why the model's template does not parse (null when it does); the server logs it at start. */
  get problem(): string | null {
    return this.parseError;
  }

  /** The prompt text; throws ChatTemplateError when the template raises or cannot be evaluated. */
  render(messages: readonly ChatMessage[], opts: { addGenerationPrompt: boolean }): string {
    if (this.template === null) throw new ChatTemplateError(`it does not parse: ${this.parseError}`);
    try {
      return this.template.render({ ...this.specialTokens, messages, add_generation_prompt: opts.addGenerationPrompt });
    } catch (err) {
      throw new ChatTemplateError(err instanceof Error ? err.message : String(err));
    }
  }
}

/** `chat_template` is a string, or (transformers ≥ 4.43) a list of {name, template}: the one named 'default' is used. */
function templateText(value: unknown): string | null {
  if (typeof value === 'string' && value !== '') return value;
  if (Array.isArray(value)) {
    const named = value.find((t: unknown) => (t as { name?: unknown })?.name === 'default') as { template?: unknown } | undefined;
    if (typeof named?.template === 'string') return named.template;
  }
  return null;
}

/** A special token as tokenizer_config writes it: a string or an AddedToken object {content, ...}. */
function tokenContent(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  return null;
}
