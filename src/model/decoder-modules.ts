// The modules of a Hugging Face causal LM (LlamaForCausalLM, Qwen2ForCausalLM,
// MistralForCausalLM, GPT2LMHeadModel, BloomForCausalLM) as named_modules()
// names them on the instantiated model, read from its config.json alone: the
// names PEFT matches target_modules / modules_to_save against and writes into
// adapter tensor keys (`transformer.h.0.attn.c_attn` even where the hub's
// GPT-2 weights are stored without the `transformer.` prefix). The family
// modules own the table (linearSites, embeddingModules); this is its PEFT view.

import { CheckpointError } from '../util/errors.js';
import { DECODER_FAMILIES, decoderFamilyForConfig, UnsupportedModelError } from './families/index.js';

export interface DecoderModule {
  /** named_modules() path (`model.layers.0.self_attn.q_proj`). */
  path: string;
  /** torch.nn.Linear (weight [out, in]), GPT-2's Conv1D (weight [in, out]) or torch.nn.Embedding ([num, dim]). */
  kind: 'linear' | 'conv1d' | 'embedding';
  /** Linear / Conv1D: in_features; Embedding: num_embeddings. */
  inFeatures: number;
  /** Linear / Conv1D: out_features; Embedding: embedding_dim. */
  outFeatures: number;
  bias: boolean;
}

export interface DecoderModuleTable {
  modelType: string;
  hiddenSize: number;
  modules: DecoderModule[];
  /** PEFT's default LoRA target_modules for this model type. */
  defaultLoraTargets: readonly string[];
}

/** The modules of the causal LM that `config` (a parsed config.json) describes. */
export function decoderModuleTable(config: unknown, source: string): DecoderModuleTable {
  let family;
  try {
    family = decoderFamilyForConfig(config, source);
  } catch (err) {
    if (!(err instanceof UnsupportedModelError)) throw err;
    const modelType = typeof config === 'object' && config !== null ? (config as Record<string, unknown>)['model_type'] : undefined;
    const supported = DECODER_FAMILIES.flatMap((f) => f.modelTypes).join(', ');
    throw new CheckpointError(`${source}: model_type ${JSON.stringify(modelType)} is not a supported causal LM (${supported})`, { cause: err });
  }
  const c = family.parseConfig(config, source);
  const modules: DecoderModule[] = [
    ...family.embeddingModules(c).map((e) => ({ path: e.module, kind: 'embedding' as const, inFeatures: e.num, outFeatures: e.dim, bias: false })),
    ...family.linearSites(c).map((s) => ({ path: s.module, kind: s.storage, inFeatures: s.inDim, outFeatures: s.outDim, bias: s.bias })),
    { path: family.vocabModules.lmHead, kind: 'linear', inFeatures: c.hiddenSize, outFeatures: c.vocabSize, bias: false },
  ];
  return { modelType: c.modelType, hiddenSize: c.hiddenSize, modules, defaultLoraTargets: family.defaultLoraTargets };
}

/** Short names a user may give as target_modules: each module path's last component, deduplicated, in table order. */
export function moduleShortNames(table: DecoderModuleTable): string[] {
  return [...new Set(table.modules.map((m) => m.path.slice(m.path.lastIndexOf('.') + 1)))];
}
