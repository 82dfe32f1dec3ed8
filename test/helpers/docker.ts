/** The Docker engine for end-to-end tests, and the images they use, built locally. */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { ROOT } from './cli.js';

export const SUITE_IMAGE = 'warren-base-ruby';
export const SERVICES_IMAGE = 'warren:test';

/** Builds the offline base images (host binaries) unless present. */
export function ensureBaseImages(): void {
  execFileSync(path.join(ROOT, 'docker/build-local-bases.sh'), { stdio: 'inherit' });
}

/** Builds the services image from this checkout (kept when nothing in it changed). */
export function ensureServicesImage(): void {
  execFileSync(path.join(ROOT, 'docker/build-image.sh'), [SERVICES_IMAGE], { stdio: 'inherit', env: { ...process.env, BASE: 'warren-base-node' } });
}

export function docker(...args: string[]): string {
  return execFileSync('docker', args, { encoding: 'utf8' }).trim();
}

/** Container ids (all states) carrying a label. */
export function containersWithLabel(label: string): string[] {
  return docker('ps', '-aq', '--filter', `label=${label}`).split('\n').filter(Boolean);
}
