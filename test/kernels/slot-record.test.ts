import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NONE } from '../../src/kernels/segmented.js';
import { SLOT_RECORD_WORDS, SlotField, SlotTable, slotSiteBase } from '../../src/kernels/slot-record.js';

const wgsl = readFileSync(join(import.meta.dirname, '..', '..', 'shaders', 'lib_slot_record.wgsl'), 'utf8');
const wgslConst = (name: string): number => {
  const m = new RegExp(`^const ${name} = (0x[0-9a-f]+|\\d+)u;`, 'm').exec(wgsl);
  if (!m) throw new Error(`lib_slot_record.wgsl has no const ${name}`);
  return Number(m[1]);
};

describe('slot record layout', () => {
  it('the WGSL side declares the same record size, fields and NONE as the TypeScript definition', () => {
    expect(wgslConst('SLOT_RECORD_WORDS')).toBe(SLOT_RECORD_WORDS);
    expect(wgslConst('SLOT_BIAS')).toBe(SlotField.bias);
    expect(wgslConst('SLOT_PRE_SCALE')).toBe(SlotField.preScale);
    expect(wgslConst('SLOT_POST_SCALE')).toBe(SlotField.postScale);
    expect(wgslConst('SLOT_DELTA_BLOCKS')).toBe(SlotField.deltaBlocks);
    expect(wgslConst('SLOT_GAMMA')).toBe(SlotField.gamma);
    expect(wgslConst('SLOT_BETA')).toBe(SlotField.beta);
    expect(wgslConst('SLOT_CONTEXT_SCALE')).toBe(SlotField.contextScale);
    expect(wgslConst('NONE')).toBe(NONE);
  });

  it('a new table holds no entries; set and flagDeltaBlock write the addressed record only', () => {
    const t = new SlotTable(3, 4);
    expect(t.words.length).toBe(3 * 4 * SLOT_RECORD_WORDS);
    for (let site = 0; site < 3; site++) expect(t.siteHasEntries(site)).toBe(false);
    t.set(1, 2, SlotField.preScale, 77);
    t.flagDeltaBlock(2, 3, 0);
    t.flagDeltaBlock(2, 3, 2);
    expect(t.get(1, 2, SlotField.preScale)).toBe(77);
    expect(t.get(1, 2, SlotField.bias)).toBe(NONE);
    expect(t.get(2, 3, SlotField.deltaBlocks)).toBe(0b101);
    expect(t.words[slotSiteBase(1, 4) + 2 * SLOT_RECORD_WORDS + SlotField.preScale]).toBe(77);
    expect([0, 1, 2].map((s) => t.siteHasEntries(s))).toEqual([false, true, true]);
  });

  it('slot 0 (the base model) never makes a site active', () => {
    const t = new SlotTable(1, 2);
    t.set(0, 0, SlotField.bias, 5);
    expect(t.siteHasEntries(0)).toBe(false);
  });
});
