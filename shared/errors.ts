/**
 * Typed errors. Failures of tests are data (results), never exceptions; these are for the
 * infrastructure and for bad input, and each describes itself in one line.
 */

/** Bad flag, bad config, missing directory: the user's to fix. CLI exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** Broker unreachable, publish not confirmed, channel gone. Retried where it can be. */
export class InfrastructureError extends Error {
  override name = 'InfrastructureError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A publish that the broker could not route (mandatory + 312 NO_ROUTE). */
export class UnroutableError extends InfrastructureError {
  override name = 'UnroutableError';
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
