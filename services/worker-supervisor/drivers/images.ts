/**
 * Images for the docker driver, host-wide: present or pulled, and never pulled twice at
 * once (the slots of a supervisor ask the supervisor, which keeps one pull per image).
 * A pull's errors arrive as progress events (followProgress reports err = null even when
 * the pull failed), so the events are scanned for `error` / `errorDetail`.
 */
import type Docker from 'dockerode';

export interface RegistryAuth {
  username: string;
  password: string;
  serveraddress?: string;
}

/** What the puller needs of an engine (a fake in unit tests, dockerode for real). */
export interface ImageStore {
  has(image: string): Promise<boolean>;
  pull(image: string, auth?: RegistryAuth): Promise<void>;
}

export class ImagePuller {
  private readonly inflight = new Map<string, Promise<void>>();
  constructor(private readonly store: ImageStore, private readonly auth?: RegistryAuth, private readonly onPulled?: (image: string, ms: number) => void) {}

  ensure(image: string): Promise<void> {
    let p = this.inflight.get(image);
    if (!p) {
      p = this.fetch(image).finally(() => this.inflight.delete(image));
      this.inflight.set(image, p);
    }
    return p;
  }

  private async fetch(image: string): Promise<void> {
    if (await this.store.has(image)) return;
    const started = Date.now();
    try {
      await this.store.pull(image, this.auth);
      this.onPulled?.(image, Date.now() - started);
    } catch (err) {
      throw new Error(`cannot pull image ${image}: ${(err as Error).message}`, { cause: err });
    }
  }
}

export function dockerImageStore(docker: Docker): ImageStore {
  return {
    async has(image) {
      try {
        await docker.getImage(image).inspect();
        return true;
      } catch {
        return false;
      }
    },
    async pull(image, auth) {
      const stream = await docker.pull(image, auth ? { authconfig: auth } : {});
      await new Promise<void>((resolve, reject) => {
        docker.modem.followProgress(stream, (err: Error | null, events: Array<{ error?: string; errorDetail?: { message?: string } }>) => {
          if (err) return reject(err);
          const bad = events.find((e) => e.error || e.errorDetail);
          if (bad) return reject(new Error(bad.error ?? bad.errorDetail?.message ?? 'pull failed'));
          resolve();
        });
      });
    },
  };
}
