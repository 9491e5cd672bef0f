import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ShaderError } from '../util/errors.js';

/**
 * WGSL kernels live as readable files in shaders/. TypeScript only fills in a
 * small, named set of specialisations, declared at the top of each file:
 *
 *   //! param DTYPE: f32 | f16      (enumerated values)
 *   //! param TILE_M: int           (any integer)
 *
 * and used in the body as `${TILE_M}` and in line directives:
 *
 *   #if DTYPE == f16   /  #if HAS_BIAS   /  #else  /  #endif   (nestable)
 *   #include lib_math      (inlines shaders/lib_math.wgsl, its params merge)
 *
 * `#if NAME` is true when the value is neither 0, false, nor "none".
 */
export type ShaderParamValue = string | number | boolean;
export type ShaderParams = Readonly<Record<string, ShaderParamValue>>;

interface ParamDecl {
  name: string;
  allowed: string[] | 'int' | 'float';
}

const shaderDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'shaders');
const sourceCache = new Map<string, string>();

function loadSource(name: string, depth = 0): string {
  let src = sourceCache.get(name);
  if (src === undefined) {
    try {
      src = readFileSync(join(shaderDir, `${name}.wgsl`), 'utf8');
    } catch (err) {
      throw new ShaderError(`shader '${name}' not found in ${shaderDir}`, { cause: err });
    }
    if (depth > 4) throw new ShaderError(`shader '${name}': #include nested too deeply`);
    src = src.replace(/^#include (\w+)\s*$/gm, (_, inc: string) => loadSource(inc, depth + 1));
    sourceCache.set(name, src);
  }
  return src;
}

function parseDecls(name: string, src: string): ParamDecl[] {
  const decls: ParamDecl[] = [];
  const seen = new Set<string>();
  for (const m of src.matchAll(/^\/\/! param (\w+):\s*(.+)$/gm)) {
    const spec = (m[2] ?? '').trim();
    const allowed = spec === 'int' || spec === 'float' ? spec : spec.split('|').map((s) => s.trim());
    const paramName = m[1] ?? '';
    if (seen.has(paramName)) continue; // declared again by an included file
    seen.add(paramName);
    decls.push({ name: paramName, allowed });
  }
  if (decls.length === 0 && /\$\{/.test(src)) {
    throw new ShaderError(`shader '${name}' uses \${...} but declares no //! param`);
  }
  return decls;
}

function truthy(v: ShaderParamValue | undefined): boolean {
  return !(v === undefined || v === 0 || v === false || v === 'none' || v === 'false' || v === '0');
}

function evalCondition(cond: string, params: ShaderParams, shader: string): boolean {
  const m = /^(\w+)\s*(==|!=)\s*(\w+)$/.exec(cond.trim());
  if (m) {
    const [, key = '', op, value] = m;
    if (!(key in params)) throw new ShaderError(`shader '${shader}': #if on undeclared param ${key}`);
    const equal = String(params[key]) === value;
    return op === '==' ? equal : !equal;
  }
  const key = cond.trim();
  if (!/^\w+$/.test(key) || !(key in params)) {
    throw new ShaderError(`shader '${shader}': bad #if condition '${cond}'`);
  }
  return truthy(params[key]);
}

/** Specialise shaders/<name>.wgsl with `params`; every declared param must be given, no others. */
export function renderShader(name: string, params: ShaderParams): string {
  const src = loadSource(name);
  const decls = parseDecls(name, src);
  const declared = new Set(decls.map((d) => d.name));
  for (const d of decls) {
    const v = params[d.name];
    if (v === undefined) throw new ShaderError(`shader '${name}': missing param ${d.name}`);
    if (d.allowed === 'int' && !(typeof v === 'number' && Number.isInteger(v))) {
      throw new ShaderError(`shader '${name}': param ${d.name} must be an integer, got ${String(v)}`);
    }
    if (d.allowed === 'float' && typeof v !== 'number') {
      throw new ShaderError(`shader '${name}': param ${d.name} must be a number, got ${String(v)}`);
    }
    if (Array.isArray(d.allowed) && !d.allowed.includes(String(v))) {
      throw new ShaderError(`shader '${name}': param ${d.name}=${String(v)} not one of ${d.allowed.join('|')}`);
    }
  }
  for (const key of Object.keys(params)) {
    if (!declared.has(key)) throw new ShaderError(`shader '${name}': unknown param ${key}`);
  }

  const out: string[] = [];
  // Stack of [this branch active, any branch taken] for nested #if.
  const stack: { active: boolean; parentActive: boolean }[] = [];
  const isActive = () => stack.every((s) => s.active);
  for (const line of src.split('\n')) {
    const t = line.trim();
    if (t.startsWith('#if ')) {
      const parentActive = isActive();
      stack.push({ active: parentActive && evalCondition(t.slice(4), params, name), parentActive });
      continue;
    }
    if (t === '#else') {
      const top = stack[stack.length - 1];
      if (!top) throw new ShaderError(`shader '${name}': #else without #if`);
      top.active = top.parentActive && !top.active;
      continue;
    }
    if (t === '#endif') {
      if (!stack.pop()) throw new ShaderError(`shader '${name}': #endif without #if`);
      continue;
    }
    if (t.startsWith('//!')) continue;
    if (!isActive()) continue;
    out.push(
      line.replace(/\$\{(\w+)\}/g, (_, key: string) => {
        const v = params[key];
        if (v === undefined) throw new ShaderError(`shader '${name}': undeclared param \${${key}}`);
        // Floats must stay WGSL float literals (1 -> 1.0).
        return typeof v === 'number' && !Number.isInteger(v) ? v.toExponential() : String(v);
      }),
    );
  }
  if (stack.length > 0) throw new ShaderError(`shader '${name}': unterminated #if`);
  return out.join('\n');
}

/** Stable cache key for a specialisation. */
export function shaderKey(name: string, params: ShaderParams): string {
  const parts = Object.keys(params)
    .sort()
    .map((k) => `${k}=${String(params[k])}`);
  return `${name}(${parts.join(',')})`;
}
