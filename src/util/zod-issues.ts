import type { z } from 'zod';

/**
 * An issue's message without request bytes: zod quotes unknown keys back
 * ('Unrecognized key: "..."'), and a key is as much the client's input as a
 * value. Other zod messages name expected types and options only.
 */
export function issueMessage(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') {
    const n = issue.keys.length;
    return `${n} unknown field${n === 1 ? '' : 's'} (see /openapi.json for the fields this takes)`;
  }
  return issue.message;
}
