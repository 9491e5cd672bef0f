import { ShaderError } from '../util/errors.js';
import { renderShader, shaderKey, type ShaderParams } from './shader-template.js';

/** A kernel as data: which shader file, which specialisation. */
export interface KernelSpec {
  shader: string;
  params: ShaderParams;
}

/**
 * Compiles each (shader, params) specialisation once per device and keeps it.
 * `prepare` compiles inside an error scope so a bad specialisation fails with
 * the compiler's messages; `get` is synchronous for the encode path.
 */
export class PipelineCache {
  private readonly pipelines = new Map<string, GPUComputePipeline>();

  constructor(
    private readonly device: GPUDevice,
    private readonly f16Available: boolean,
  ) {}

  get size(): number {
    return this.pipelines.size;
  }

  private create(spec: KernelSpec): { pipeline: GPUComputePipeline; module: GPUShaderModule; code: string } {
    if (spec.params['DTYPE'] === 'f16' && !this.f16Available) {
      throw new ShaderError(`kernel ${spec.shader} asked for f16 but the device has no shader-f16`);
    }
    const code = renderShader(spec.shader, spec.params);
    const label = shaderKey(spec.shader, spec.params);
    // Kernel wrappers fall back before asking (gemm.ts); this names the cause where one did not,
    // instead of Dawn's validation error about an extension that is not enabled.
    if (/^enable subgroups;/m.test(code) && !this.device.features.has('subgroups')) {
      throw new ShaderError(`kernel ${label} needs the subgroups feature, which the device lacks`);
    }
    const module = this.device.createShaderModule({ label, code });
    const pipeline = this.device.createComputePipeline({ label, layout: 'auto', compute: { module, entryPoint: 'main' } });
    return { pipeline, module, code };
  }

  /** Compile (if needed) and surface compile/validation errors as ShaderError. */
  async prepare(spec: KernelSpec): Promise<GPUComputePipeline> {
    const key = shaderKey(spec.shader, spec.params);
    const hit = this.pipelines.get(key);
    if (hit) return hit;
    this.device.pushErrorScope('validation');
    const { pipeline, module } = this.create(spec);
    const error = await this.device.popErrorScope();
    if (error) {
      const info = await module.getCompilationInfo();
      const details = info.messages.map((m) => `${m.type} ${m.lineNum}:${m.linePos} ${m.message}`).join('\n');
      throw new ShaderError(`kernel ${key} failed to compile: ${error.message}\n${details}`);
    }
    this.pipelines.set(key, pipeline);
    return pipeline;
  }

  get(spec: KernelSpec): GPUComputePipeline {
    const key = shaderKey(spec.shader, spec.params);
    let pipeline = this.pipelines.get(key);
    if (!pipeline) {
      pipeline = this.create(spec).pipeline;
      this.pipelines.set(key, pipeline);
    }
    return pipeline;
  }
}
