import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

/**
 * The image is not built here (no Docker daemon); these checks catch what
 * breaks a build or a container silently: a COPY of a missing or ignored path,
 * a runtime file the code reads that the image lacks, the Vulkan driver setup.
 */
const dockerfile = readFileSync('Dockerfile', 'utf8');
// Join continuation lines so each instruction is one line.
const instructions = dockerfile
  .replace(/\\\n/g, ' ')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));
const stages = instructions.reduce<string[][]>((acc, l) => {
  if (/^FROM\s/i.test(l)) acc.push([]);
  acc[acc.length - 1]?.push(l);
  return acc;
}, []);
const ignored = readFileSync('.dockerignore', 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));

describe('Dockerfile', () => {
  it('builds on a Debian bookworm Node 20 image in two stages', () => {
    expect(stages.length).toBe(2);
    for (const s of stages) expect(s[0]).toMatch(/^FROM node:20-bookworm(-slim)?\b/);
  });

  it('installs the Vulkan driver with scripts/setup-system.sh --vulkan-only, naming no mirror', () => {
    const runtime = stages[1]!.join('\n');
    expect(runtime).toMatch(/COPY scripts\/setup-system\.sh scripts\/apt-sources\.sh /);
    expect(runtime).toMatch(/setup-system\.sh --vulkan-only/);
    expect(dockerfile).not.toMatch(/https?:\/\/(?!127\.0\.0\.1|localhost)/);
    expect(dockerfile).toMatch(/NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics/);
  });

  it('copies only paths that exist and are not excluded by .dockerignore', () => {
    const copies = instructions.filter((l) => /^COPY\s/i.test(l) && !/--from=/.test(l));
    expect(copies.length).toBeGreaterThan(3);
    for (const c of copies) {
      const args = c.split(/\s+/).slice(1).filter((a) => !a.startsWith('--'));
      for (const src of args.slice(0, -1)) {
        expect(existsSync(src), `COPY source ${src} does not exist`).toBe(true);
        expect(ignored, `COPY source ${src} is excluded by .dockerignore`).not.toContain(src);
      }
    }
    // Local state never enters the build context.
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', '.git', '.cache']));
  });

  it('ships what the code reads at run time relative to the package root', () => {
    const runtime = stages[1]!;
    const copied = runtime.filter((l) => /^COPY\s/i.test(l)).map((l) => l.split(/\s+/).at(-1));
    // shaders/ (src/gpu/shader-template.ts), static/ (status page), bin/ (the CLI), dist/ + node_modules/.
    for (const dir of ['./shaders', './static', './bin', './dist', './node_modules']) expect(copied).toContain(dir);
    expect(instructions).toContain('ENTRYPOINT ["node", "bin/petserve.js"]');
    expect(instructions).toContain('CMD ["serve"]');
    expect(instructions.some((l) => /^EXPOSE\s+8080\s+9464$/.test(l))).toBe(true);
    expect(instructions.some((l) => /^USER\s+node$/.test(l))).toBe(true);
  });
});
