/** Process entry of the GitHub webhook service (`warren github`). */
import fs from 'node:fs';
import { brokerUrl } from '../../shared/config.js';
import { UsageError } from '../../shared/errors.js';
import { createLogger } from '../../shared/log.js';
import { runService } from '../../shared/service.js';
import { loadSigningKey } from '../../shared/signing.js';
import { WebhookService } from './webhook.js';

export interface GitHubFlags {
  broker?: string;
  port: string;
  host?: string;
  phrase: string;
  allow: string;
  onPullRequest?: boolean;
  buildCommand?: string;
  webhookSecretFile?: string;
  tokenFile?: string;
  reportUrl?: string;
  adapter: string;
  cwd: string;
  image?: string;
  discoverCommand?: string;
  runCommand?: string;
  labels?: string;
  signingKeyFile?: string;
}

/** A secret from a file (trimmed) or a variable; refused in one line, naming both, when neither is set. */
function secret(file: string | undefined, variable: string, what: string): string {
  if (file) {
    try {
      return fs.readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw new UsageError(`${what}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  const v = process.env[variable];
  if (!v) throw new UsageError(`${what}: set ${variable} or give the file`);
  return v;
}

export function startGitHub(f: GitHubFlags) {
  const log = createLogger('github');
  const port = Number(f.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port: expected a port number, got ${JSON.stringify(f.port)}`);
  return runService(log, new WebhookService({
    brokerUrl: brokerUrl(f.broker),
    log,
    secret: secret(f.webhookSecretFile, 'WARREN_GITHUB_WEBHOOK_SECRET', '--webhook-secret-file'),
    github: { token: secret(f.tokenFile, 'GITHUB_TOKEN', '--token-file'), apiUrl: process.env.GITHUB_API_URL || undefined, reportUrl: f.reportUrl },
    port,
    host: f.host,
    phrase: f.phrase,
    allow: f.allow.split(',').map((s) => s.trim().toUpperCase()).filter(Boolean),
    onPullRequest: f.onPullRequest ?? false,
    buildCommand: f.buildCommand,
    run: {
      adapter: f.adapter as never, cwd: f.cwd, image: f.image,
      ...(f.discoverCommand && f.runCommand ? { command: { discover: f.discoverCommand, run: f.runCommand } } : {}),
      labels: f.labels ? f.labels.split(',').map((l) => l.trim()).filter(Boolean) : [],
    },
    signingKey: loadSigningKey(f.signingKeyFile),
  }));
}
