import { describe, expect, it } from 'vitest';
import { bertFamily } from '../../src/model/families/bert.js';
import { DECODER_FAMILIES, MODEL_FAMILIES, UnsupportedModelError, decoderFamilyForConfig, familyForConfig } from '../../src/model/families/index.js';
import { CheckpointError } from '../../src/util/errors.js';

const cfg = bertFamily.parseConfig(
  { model_type: 'bert', hidden_size: 64, num_hidden_layers: 3, num_attention_heads: 4, intermediate_size: 256, vocab_size: 100 },
  'config.json',
);

describe('model family selection from config.json', () => {
  it('picks BERT by model_type, or by architectures when model_type is absent', () => {
    expect(familyForConfig({ model_type: 'bert' }, 'config.json')).toBe(bertFamily);
    expect(familyForConfig({ architectures: ['BertForSequenceClassification'] }, 'config.json')).toBe(bertFamily);
  });

  it('an unknown model names itself and every supported family in a typed error', () => {
    const err = (() => {
      try {
        familyForConfig({ model_type: 'falcon', architectures: ['FalconForCausalLM'] }, '/m/config.json');
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(UnsupportedModelError);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(String(err)).toMatch(/\/m\/config\.json: model_type 'falcon' is not supported; supported: bert \(model_type 'bert'; BertModel, BertForSequenceClassification\); llama \(model_type 'llama', 'mistral', 'qwen2'/);
    expect(() => familyForConfig({ architectures: ['FalconForCausalLM'] }, 'c.json')).toThrow(/architectures \[FalconForCausalLM\] is not supported/);
    expect(() => familyForConfig({}, 'c.json')).toThrow(/names neither model_type nor architectures/);
  });

  it('a decoder given to the encoder path (and an encoder to generation) is refused saying which kind it is', () => {
    expect(() => familyForConfig({ model_type: 'llama' }, 'c.json')).toThrow(/model_type 'llama' is a causal decoder/);
    expect(() => decoderFamilyForConfig({ model_type: 'bert' }, 'c.json')).toThrow(/model_type 'bert' is an encoder; generation supports llama/);
    expect(decoderFamilyForConfig({ architectures: ['GPT2LMHeadModel'] }, 'c.json').name).toBe('gpt2');
    for (const f of DECODER_FAMILIES) for (const t of f.modelTypes) expect(decoderFamilyForConfig({ model_type: t }, 'c')).toBe(f);
  });

  it('every family of the table is reachable by each of its model types', () => {
    for (const f of MODEL_FAMILIES) for (const t of f.modelTypes) expect(familyForConfig({ model_type: t }, 'c')).toBe(f);
  });
});

describe('BERT site table', () => {
  const s = bertFamily.sites;
  it('query/key/value are column blocks of the fused QKV GEMM; the rest are their own GEMMs', () => {
    expect(s.linear(cfg, 2, 'key')).toEqual({ module: 'encoder.layer.2.attention.self.key', outDim: 64, inDim: 64, gemm: 'qkv', colOffset: 64 });
    expect(s.linear(cfg, 0, 'value').colOffset).toBe(128);
    expect(s.linear(cfg, 1, 'output')).toEqual({ module: 'encoder.layer.1.output.dense', outDim: 64, inDim: 256, gemm: 'output', colOffset: 0 });
    expect(s.gemmShape(cfg, 'qkv')).toEqual({ N: 192, K: 64, deltaBlock: 64 });
    expect(s.gemmShape(cfg, 'intermediate')).toEqual({ N: 256, K: 64, deltaBlock: 256 });
  });

  it('slot-table sites are distinct and inside the table', () => {
    const seen = new Set<number>();
    for (let layer = 0; layer < cfg.numHiddenLayers; layer++) {
      for (const site of [...s.layerGemms, ...s.layerNormSites, 'context'] as const) seen.add(s.slotSiteIndex(cfg, layer, site));
    }
    seen.add(s.slotSiteIndex(cfg, -1, 'pooler'));
    seen.add(s.slotSiteIndex(cfg, -1, 'embeddings'));
    expect(seen.size).toBe(s.slotSiteCount(cfg));
    expect(Math.max(...seen)).toBe(s.slotSiteCount(cfg) - 1);
  });
});
