// The OpenAI shapes live below the server (src/gateway/openai-protocol.ts) so
// that the batch queue answers OpenAI batch lines with the very same schemas
// and response types as these routes; the server reads them from here.
export * from '../../gateway/openai-protocol.js';
