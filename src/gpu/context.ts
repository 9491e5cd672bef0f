import { create, globals } from 'webgpu';
import { DeviceLostError, GpuUnavailableError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';
import { describeDawnToggles, dawnToggleFlags, NO_DAWN_TOGGLES, type DawnToggles } from './dawn-toggles.js';
import { PipelineCache } from './pipeline-cache.js';

export interface GpuOptions {
  /** Dawn backend ('vulkan', 'metal', 'd3d12', ...); undefined lets Dawn choose. */
  backend?: string | undefined;
  /** Case-insensitive substring of the adapter name to pick (e.g. 'llvmpipe', 'nvidia'). */
  adapter?: string | undefined;
  powerPreference?: GPUPowerPreference | undefined;
  /** Dawn toggles for this context's instance (src/gpu/dawn-toggles.ts); none by default. */
  dawnToggles?: DawnToggles | undefined;
}

export interface GpuCapabilities {
  adapterName: string;
  backendHint: string;
  shaderF16: boolean;
  timestampQuery: boolean;
  subgroups: boolean;
  /** The adapter's subgroup size where it has one (subgroups present and min = max size), else null. */
  subgroupSize: number | null;
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  /** The Dawn toggles this device was created with ('none' = Dawn's defaults). */
  dawnToggles: string;
}

// Dawn's globals (GPUBufferUsage etc.) must exist before any WebGPU call.
let globalsInstalled = false;
function installGlobals(): void {
  if (!globalsInstalled) {
    Object.assign(globalThis, globals);
    globalsInstalled = true;
  }
}

/**
 * One Dawn instance per process and flag set. Every `create()` starts its own instance with its
 * own threads; instances left to the garbage collector while another one works crashed the
 * process now and then on lavapipe (`pthread_mutex_lock: Assertion mutex->__data.__owner == 0`,
 * twice in test/gpu/gpu-layer.test.ts, which made throwaway instances), and a server never needs
 * more than one. Contexts made with the same flags share it; each still has its own device.
 */
const dawnInstances = new Map<string, GPU>();
export function dawnInstance(flags: readonly string[]): GPU {
  const key = flags.join('\n');
  let gpu = dawnInstances.get(key);
  if (!gpu) {
    gpu = create([...flags]);
    dawnInstances.set(key, gpu);
  }
  return gpu;
}

/** Dawn reports subgroupMinSize/subgroupMaxSize on GPUAdapterInfo (not yet in @webgpu/types). */
function singleSubgroupSize(info: GPUAdapterInfo): number | null {
  const { subgroupMinSize, subgroupMaxSize } = info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
  return subgroupMinSize !== undefined && subgroupMinSize > 0 && subgroupMinSize === subgroupMaxSize ? subgroupMinSize : null;
}

const WANTED_FEATURES: GPUFeatureName[] = ['shader-f16', 'timestamp-query', 'subgroups'];

const INSTALL_HINT =
  'PetServe needs a WebGPU adapter through Dawn, which needs a Vulkan driver on Linux. ' +
  'Without a GPU run scripts/setup-system.sh (installs the Vulkan loader and Mesa >= 23 lavapipe; ' +
  "on Debian bookworm from bookworm-backports). With a GPU install its vendor's Vulkan driver. " +
  'Check the gpu.adapter / PETSERVE_GPU_ADAPTER filter too.';

/**
 * Owns the WebGPU device: acquisition with the features and limits we want,
 * the pipeline cache, device-loss detection and recovery.
 *
 * `generation` increases each time the device is rebuilt; anything that holds
 * GPU resources (weights, arenas) compares it to re-upload after a loss.
 */
export class GpuContext {
  device!: GPUDevice;
  capabilities!: GpuCapabilities;
  pipelines!: PipelineCache;
  generation = 0;
  private lostReason: string | null = null;
  private readonly lostListeners: ((reason: string) => void)[] = [];
  private destroyed = false;
  private simulatedLoss = false;
  private readonly gpu: GPU;

  private constructor(
    private readonly options: GpuOptions,
    private readonly logger: Logger,
  ) {
    installGlobals();
    const flags: string[] = [];
    if (options.backend) flags.push(`backend=${options.backend}`);
    // Toggles belong to the instance: every adapter and device it makes (a recovered one too) gets them.
    flags.push(...dawnToggleFlags(options.dawnToggles ?? NO_DAWN_TOGGLES));
    this.gpu = dawnInstance(flags);
  }

  static async create(options: GpuOptions, logger: Logger): Promise<GpuContext> {
    const ctx = new GpuContext(options, logger);
    await ctx.acquire();
    return ctx;
  }

  get isLost(): boolean {
    return this.lostReason !== null;
  }

  private async pickAdapter(): Promise<GPUAdapter> {
    const wanted = this.options.adapter?.toLowerCase();
    let adapter: GPUAdapter | null = null;
    try {
      adapter = await this.gpu.requestAdapter(
        this.options.powerPreference ? { powerPreference: this.options.powerPreference } : undefined,
      );
    } catch (err) {
      throw new GpuUnavailableError(`requestAdapter failed: ${String(err)}. ${INSTALL_HINT}`, { cause: err });
    }
    if (!adapter) throw new GpuUnavailableError(`no WebGPU adapter found. ${INSTALL_HINT}`);
    const name = adapterName(adapter);
    if (wanted && !name.toLowerCase().includes(wanted)) {
      throw new GpuUnavailableError(
        `adapter '${name}' does not match the requested adapter '${this.options.adapter}'. ${INSTALL_HINT}`,
      );
    }
    return adapter;
  }

  private async acquire(): Promise<void> {
    const adapter = await this.pickAdapter();
    const features = WANTED_FEATURES.filter((f) => adapter.features.has(f));
    const al = adapter.limits;
    // Ask for the largest buffers the adapter offers: bert-base's word
    // embedding alone is ~94 MB in f32, above the 128 MiB default on some.
    const requiredLimits: Record<string, number> = {
      maxStorageBufferBindingSize: al.maxStorageBufferBindingSize,
      maxBufferSize: al.maxBufferSize,
      maxComputeWorkgroupStorageSize: al.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: al.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: al.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: al.maxComputeWorkgroupSizeY,
      maxStorageBuffersPerShaderStage: al.maxStorageBuffersPerShaderStage,
    };
    const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
    const name = adapterName(adapter);
    this.device = device;
    this.generation += 1;
    this.lostReason = null;
    this.simulatedLoss = false;
    this.pipelines = new PipelineCache(device, features.includes('shader-f16'));
    this.capabilities = {
      adapterName: name,
      backendHint: this.options.backend ?? 'auto',
      shaderF16: device.features.has('shader-f16'),
      timestampQuery: device.features.has('timestamp-query'),
      subgroups: device.features.has('subgroups'),
      subgroupSize: device.features.has('subgroups') ? singleSubgroupSize(adapter.info) : null,
      maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
      maxBufferSize: device.limits.maxBufferSize,
      maxComputeWorkgroupStorageSize: device.limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: device.limits.maxComputeInvocationsPerWorkgroup,
      dawnToggles: describeDawnToggles(this.options.dawnToggles ?? NO_DAWN_TOGGLES),
    };
    device.addEventListener('uncapturederror', (ev) => {
      this.logger.error({ err: String((ev as GPUUncapturedErrorEvent).error.message) }, 'uncaptured WebGPU error');
    });
    void device.lost.then((info) => {
      if (this.device !== device) return; // an older device we already replaced
      if (info.reason === 'destroyed' && !this.simulatedLoss) {
        if (!this.destroyed) this.lostReason = 'destroyed';
        return;
      }
      this.lostReason = info.message || info.reason;
      for (const l of this.lostListeners) l(this.lostReason);
      this.logger.error({ reason: info.reason, message: info.message, generation: this.generation }, 'GPU device lost');
    });
    this.logger.info(
      { adapter: name, generation: this.generation, granted: this.capabilities, requestedFeatures: WANTED_FEATURES },
      'WebGPU device ready',
    );
  }

  /** Rebuild the device after a loss. Holders of GPU resources re-upload on seeing a new `generation`. */
  async recover(): Promise<void> {
    if (this.destroyed) throw new DeviceLostError('GPU context was shut down');
    this.logger.warn({ previousGeneration: this.generation, reason: this.lostReason }, 'rebuilding GPU device');
    try {
      this.device.destroy();
    } catch {
      // already gone
    }
    await this.acquire();
  }

  /** Called on every device loss (not on destroy): metrics count them. */
  onLost(listener: (reason: string) => void): void {
    this.lostListeners.push(listener);
  }

  /** Test hook: make the device lost as a driver reset would. */
  simulateDeviceLoss(): void {
    this.simulatedLoss = true;
    this.device.destroy();
  }

  /** Resolves when the device is lost (for racing against in-flight readbacks). */
  lostPromise(): Promise<GPUDeviceLostInfo> {
    return this.device.lost;
  }

  destroy(): void {
    this.destroyed = true;
    this.device.destroy();
  }
}

function adapterName(adapter: GPUAdapter): string {
  const info = adapter.info;
  return info.description || info.device || info.vendor || 'unknown adapter';
}
