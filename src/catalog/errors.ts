import { PetServeError } from '../util/errors.js';

/** The shared catalog (Redis) cannot be reached: registration and deletion are refused, serving goes on. */
export class CatalogUnavailableError extends PetServeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CATALOG_UNAVAILABLE', message, options);
  }
}
