// BERT's config moved into its family (families/bert/config.ts); src/pet,
// src/server and src/scheduler import it from here until they switch.
export type { BertConfig } from './families/bert.js';
