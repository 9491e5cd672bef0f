// The serving path checks token ids once, in the gateway; the scheduler and the
// runner trust it (test/scheduler/scheduler.test.ts: rowsChecked). So every bad
// row must be refused here, naming its field, before anything is submitted.
import { describe, expect, it } from 'vitest';
import { InferenceGateway } from '../../src/gateway/gateway.js';
import { SequenceTooLongError } from '../../src/gateway/errors.js';
import type { InferenceRequest, InferenceResult, InferenceService } from '../../src/scheduler/types.js';
import { InvalidInputError } from '../../src/util/errors.js';

const MAX_POS = 40;
const VOCAB = 1000;

function gateway(): { gateway: InferenceGateway; submitted: InferenceRequest[] } {
  const submitted: InferenceRequest[] = [];
  const service: InferenceService = {
    submit: (req) => {
      submitted.push(req);
      const r: InferenceResult = { logits: Float32Array.of(0, 1), pooled: null, queueWaitMs: 0, latencyMs: 0, batchRows: 1 } as InferenceResult;
      return Promise.resolve(r);
    },
    stats: () => ({}) as ReturnType<InferenceService['stats']>,
    drain: () => Promise.resolve(),
  };
  const registry = {
    base: { dir: '/models/base', numLabels: 2, config: { id2label: ['neg', 'pos'] } },
    baseModelId: 'base',
    get: () => undefined,
  };
  const g = new InferenceGateway({
    service,
    registry: registry as never,
    tokenizer: null,
    modelConfig: { maxPositionEmbeddings: MAX_POS, vocabSize: VOCAB, typeVocabSize: 2 } as never,
    maxInputsPerRequest: 8,
  });
  return { gateway: g, submitted };
}

describe('gateway id checks (the only ones on the serving path)', () => {
  it.each([
    ['an id outside the vocabulary', [[1, VOCAB]], undefined, /^input_ids\[0\]\[1\] is not a token id of this model \(0\.\.999\)$/],
    ['a negative id', [[3], [-1]], undefined, /^input_ids\[1\]\[0\] is not a token id/],
    ['a fractional id', [[1.5]], undefined, /^input_ids\[0\]\[0\] is not a token id/],
    ['an empty row', [[1], []], undefined, /^input_ids\[1\] is empty/],
    ['a segment id outside the segment vocabulary', [[1, 2]], [[0, 2]], /^token_type_ids\[0\]\[1\] is not a segment id/],
    ['segment ids of another length', [[1, 2]], [[0]], /^token_type_ids\[0\] has 1 ids for 2 tokens of input_ids\[0\]$/],
    ['segment ids for fewer rows', [[1], [2]], [[0]], /^token_type_ids: 1 rows for 2 input_ids rows$/],
  ])('refuses %s naming the field', (_case, rows, types, message) => {
    const { gateway: g } = gateway();
    const call = () => g.checkIds('input_ids', rows, types, false);
    expect(call).toThrow(InvalidInputError);
    expect(call).toThrow(message);
  });

  it('refuses a row longer than max_position_embeddings unless truncating, and cuts ids and segment ids alike', () => {
    const { gateway: g } = gateway();
    const long = Array.from({ length: MAX_POS + 3 }, (_, i) => i + 1);
    expect(() => g.checkIds('input_ids', [long], undefined, false)).toThrow(SequenceTooLongError);
    expect(() => g.checkIds('input_ids', [long], undefined, false)).toThrow(/max_position_embeddings/);
    const [cut] = g.checkIds('input_ids', [long], [long.map(() => 1)], true);
    expect(cut!.inputIds).toEqual(long.slice(0, MAX_POS));
    expect(cut!.tokenTypeIds).toHaveLength(MAX_POS);
  });

  it('passes good rows through unchanged and submits them; a refused request submits nothing', async () => {
    const { gateway: g, submitted } = gateway();
    expect(() => g.checkIds('input_ids', [[1], [VOCAB]], undefined, false)).toThrow(InvalidInputError);
    expect(submitted).toHaveLength(0);
    const rows = g.checkIds('input_ids', [[1, 2], [3, 4, 5]], [[0, 0], [0, 1, 1]], false);
    expect(rows).toEqual([
      { inputIds: [1, 2], tokenTypeIds: [0, 0] },
      { inputIds: [3, 4, 5], tokenTypeIds: [0, 1, 1] },
    ]);
    await g.run(g.model('base'), rows, {});
    expect(submitted.map((r) => r.inputIds)).toEqual([[1, 2], [3, 4, 5]]);
  });
});
