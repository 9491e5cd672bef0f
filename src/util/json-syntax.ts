/**
 * Where a JSON parser stopped, without the text it quotes: V8's messages
 * include a slice of the input ("Unexpected token 'x', \"...\" is not valid JSON").
 */
export function jsonSyntaxWhere(parserMessage: string): string {
  const position = /position (\d+)/.exec(parserMessage);
  if (position) return `syntax error at character ${position[1]}`;
  if (/end of (JSON )?input/i.test(parserMessage)) return 'it ends early';
  return 'syntax error';
}
