#!/usr/bin/env node
// The `warren` command: the compiled CLI (npm run build, run by `npm ci` via prepare).
import { forkSpares } from '../dist/services/worker-supervisor/slot-process.js';

// `warren run --local`: its slot processes start loading now, while the command loads
forkSpares(process.argv);
const { main } = await import('../dist/cli/main.js');

await main(process.argv);
// `warren run` (and deploy, hosts, health) are done once main returns (its services are stopped); a service command
// (dispatcher, supervisor, aggregator) keeps running until it is signalled.
if (['run', 'deploy', 'hosts', 'health'].includes(process.argv[2]) || process.exitCode !== undefined) process.exit(process.exitCode ?? 0);
