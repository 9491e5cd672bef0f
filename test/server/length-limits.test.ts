// Length limits as transformers has them: token ids are bounded by the model's
// position table (max_position_embeddings), text by the tokenizer's
// model_max_length when that is smaller; the refusal names the limit applied.

import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InferenceGateway } from '../../src/gateway/gateway.js';
import { SequenceTooLongError } from '../../src/gateway/errors.js';
import { TextTokenizer } from '../../src/tokenizer/text-tokenizer.js';
import { FakeService, tinyModel, type TinyModel } from '../queue/helpers.js';

let model: TinyModel;
let gateway: InferenceGateway;
const MODEL_MAX_LENGTH = 16;

beforeAll(async () => {
  model = await tinyModel([{ id: 'sentiment', numLabels: 2 }]);
  // The checkpoint has 32 positions; its tokenizer says 16 (as a checkpoint fine-tuned on short texts may).
  const file = join(model.modelDir, 'tokenizer_config.json');
  const config = JSON.parse(await readFile(file, 'utf8').catch(() => '{}')) as Record<string, unknown>;
  await writeFile(file, JSON.stringify({ ...config, model_max_length: MODEL_MAX_LENGTH }));
  const tokenizer = (await TextTokenizer.load(model.modelDir))!;
  expect(tokenizer.modelMaxLength).toBe(MODEL_MAX_LENGTH);
  gateway = new InferenceGateway({
    service: new FakeService(model.registry),
    registry: model.registry,
    tokenizer,
    modelConfig: model.checkpoint.config,
    maxInputsPerRequest: 8,
  });
});
afterAll(async () => model?.dispose());

const longText = Array.from({ length: 40 }, (_, i) => `w${i}`).join(' ');

describe('length limits', () => {
  it('token ids up to max_position_embeddings are taken, though the tokenizer says less', () => {
    const positions = model.checkpoint.config.maxPositionEmbeddings;
    expect(positions).toBeGreaterThan(MODEL_MAX_LENGTH);
    const ids = Array.from({ length: positions }, (_, i) => 1 + (i % 50));
    expect(gateway.checkIds('input_ids', [ids], undefined, false)[0]!.inputIds).toHaveLength(positions);
  });

  it('token ids beyond max_position_embeddings are refused naming that limit, or cut with truncate', () => {
    const positions = model.checkpoint.config.maxPositionEmbeddings;
    const ids = Array.from({ length: positions + 5 }, () => 7);
    const err = (() => {
      try {
        gateway.checkIds('input_ids', [ids], undefined, false);
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(SequenceTooLongError);
    expect((err as Error).message).toMatch(new RegExp(`${positions + 5} tokens, at most ${positions} .*max_position_embeddings`));
    expect(gateway.checkIds('input_ids', [ids], undefined, true)[0]!.inputIds).toHaveLength(positions);
  });

  it('text is refused beyond min(model_max_length, max_position_embeddings), naming model_max_length, or truncated to it', () => {
    expect(() => gateway.encodeTexts('inputs', [longText], false)).toThrow(new RegExp(`at most ${MODEL_MAX_LENGTH} .*model_max_length`));
    const [cut] = gateway.encodeTexts('inputs', [longText], true);
    expect(cut!.inputIds).toHaveLength(MODEL_MAX_LENGTH);
  });
});
