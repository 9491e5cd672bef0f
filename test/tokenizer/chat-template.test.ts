import { describe, expect, it } from 'vitest';
import { CHATML_TEMPLATE } from '../../src/model/init-decoder.js';
import { ChatTemplate, ChatTemplateError, FALLBACK_CHAT_TEMPLATE } from '../../src/tokenizer/chat-template.js';

const messages = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Hi there' },
];

describe('chat templates', () => {
  it("renders the model's template with the generation prompt (ChatML as transformers writes it)", () => {
    const t = ChatTemplate.fromTokenizerConfig({ chat_template: CHATML_TEMPLATE, bos_token: '<s>', eos_token: '<|im_end|>' });
    expect(t.source).toBe('model');
    expect(t.render(messages, { addGenerationPrompt: true })).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(t.render(messages, { addGenerationPrompt: false })).not.toContain('assistant');
  });

  it('passes bos_token / eos_token (strings or AddedToken objects) to the template', () => {
    const t = ChatTemplate.fromTokenizerConfig({
      chat_template: "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}",
      bos_token: { content: '<s>', lstrip: false },
      eos_token: '</s>',
    });
    expect(t.render(messages, { addGenerationPrompt: true })).toBe('<s>[system] Be brief.</s>[user] Hi there</s>');
  });

  it('takes the template named default from a list of named templates', () => {
    const t = ChatTemplate.fromTokenizerConfig({ chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D{{ messages|length }}' }] });
    expect(t.render(messages, { addGenerationPrompt: true })).toBe('D2');
  });

  it('falls back to ChatML when the model has no template', () => {
    const t = ChatTemplate.fromTokenizerConfig({ bos_token: '<s>' });
    expect(t.source).toBe('fallback');
    expect(FALLBACK_CHAT_TEMPLATE).toBe(CHATML_TEMPLATE);
    expect(t.render([{ role: 'user', content: 'x' }], { addGenerationPrompt: true })).toBe('<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n');
  });

  it("a template that raises, or does not parse, is a ChatTemplateError (400) that quotes no message content", () => {
    const raising = ChatTemplate.fromTokenizerConfig({
      chat_template: "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('Conversations must start with a user turn') }}{% endif %}ok",
    });
    expect(raising.render(messages, { addGenerationPrompt: true })).toBe('ok');
    const secret = 'my-secret-text';
    const err = (() => {
      try {
        raising.render([{ role: 'assistant', content: secret }], { addGenerationPrompt: true });
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(ChatTemplateError);
    expect((err as ChatTemplateError).code).toBe('CHAT_TEMPLATE_FAILED');
    expect((err as Error).message).toContain('Conversations must start with a user turn');
    expect((err as Error).message).not.toContain(secret);

    const broken = ChatTemplate.fromTokenizerConfig({ chat_template: '{% for m in messages %}' });
    expect(broken.problem).not.toBeNull();
    expect(() => broken.render(messages, { addGenerationPrompt: true })).toThrow(ChatTemplateError);
  });
});
