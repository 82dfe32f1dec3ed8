#!/usr/bin/env node
// The `warren` command: the compiled CLI (npm run build, run by `npm ci` via prepare).
import { main } from '../dist/cli/main.js';

await main(process.argv);
// `warren run` is done once main returns (its services are stopped); a service command
// (dispatcher, supervisor, aggregator) keeps running until it is signalled.
if (process.argv[2] === 'run' || process.exitCode !== undefined) process.exit(process.exitCode ?? 0);
