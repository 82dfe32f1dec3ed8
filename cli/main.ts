/**
 * The `warren` command: its commands and flags, wired to what does each (`run` in run.ts,
 * the services in services/<name>/main.ts, deploy/hosts/health in deploy.ts).
 *
 * Exit codes: 0 all tests passed (flaky included), 1 some failed, 2 usage or infrastructure
 * error (bad flag, missing suite directory, unreachable broker, no report in time).
 */
import fs from 'node:fs';
import { Command, CommanderError } from 'commander';
import { Broker } from '../shared/broker.js';
import { brokerUrl, positiveInt, positiveNumber } from '../shared/config.js';
import { UsageError, errorMessage } from '../shared/errors.js';
import { createLogger } from '../shared/log.js';
import { ADAPTERS } from '../shared/messages.js';
import { startDispatcher } from '../services/dispatcher/main.js';
import { startAggregator } from '../services/aggregator/main.js';
import { startSupervisor } from '../services/worker-supervisor/main.js';
import type { SupervisorConfigInput } from '../services/worker-supervisor/config.js';
import { EXIT, run, type RunFlags } from './run.js';

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function program(): Command {
  const cmd = new Command('warren')
    .description('Distributed test runner on RabbitMQ: spreads a suite over many isolated workers, re-runs flaky failures, loses no test.')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(str.split('\n')[0] + '\n') })
    // TLS for amqps:// brokers, for every command (and the services it starts)
    .option('--tls-ca <file>', 'amqps: the CA that signed the broker\'s certificate ($WARREN_TLS_CA; default: the system\'s)')
    .option('--tls-cert <file>', 'amqps: a client certificate, for a broker that asks for one ($WARREN_TLS_CERT)')
    .option('--tls-key <file>', 'amqps: the client certificate\'s key ($WARREN_TLS_KEY)')
    .hook('preAction', (root) => {
      const o = root.opts<{ tlsCa?: string; tlsCert?: string; tlsKey?: string }>();
      if (o.tlsCa) process.env.WARREN_TLS_CA = o.tlsCa;
      if (o.tlsCert) process.env.WARREN_TLS_CERT = o.tlsCert;
      if (o.tlsKey) process.env.WARREN_TLS_KEY = o.tlsKey;
    });

  cmd
    .command('run')
    .description('run a suite: publish a run request and follow it to its report')
    .option('--adapter <name>', `test framework: ${ADAPTERS.join(', ')} (default: detected from --cwd)`)
    .option('--cwd <dir>', 'suite directory (the same path on every worker host)', '.')
    .option('--pattern <regex>', 'run only tests whose id or full name matches')
    .option('--exclude <regex>', 'skip tests whose id or full name matches')
    .option('--report-dir <dir>', 'where to write report.json, junit.xml, summary.md, report.html', 'warren-report')
    .option('--rerun-threshold <fraction>', 're-run the failures while failed/total is at most this', '0.1')
    .option('--max-rounds <n>', 'rounds in all, the first included', '3')
    .option('--test-timeout <sec>', 'kill a test running longer than this and fail it', '300')
    .option('--run-timeout <sec>', 'fail every test without a result this long after the start', '3600')
    .option('--max-batch <n>', 'at most this many tests per spec (one message, one batch of a runner)', '50')
    .option('--fresh-process', "a cold framework process for every batch instead of each worker's warm runner (for suites that leave global state behind)")
    .option('--env <KEY=VALUE>', 'environment for the test processes (repeatable)', collect, [])
    .option('--secret-env <NAME>', "pass this variable of warren's own environment to the tests sealed: never in clear in messages, journals, logs, reports (repeatable; needs a signing key)", collect, [])
    .option('--signing-key-file <file>', 'sign the run request with this key (default: $WARREN_SIGNING_KEY_FILE, then $WARREN_SIGNING_KEY)')
    .option('--github-pr <owner/repo#n>', 'post the result on this pull request: one comment, updated on later runs, and a commit status ($GITHUB_TOKEN, $GITHUB_API_URL)')
    .option('--report-url <url>', 'where the report can be read (linked from the pull request comment and status)')
    .option('--discover-command <cmd>', 'command/junit adapters: prints one test id per line')
    .option('--run-command <template>', 'command/junit adapters: {id} one test id, {ids} several, {junit} the JUnit XML file to write')
    .option('--only-failures-from <report.json>', 're-run only the tests that failed in an earlier report')
    .option('--timings <report.json>', 'balance batches by the durations in an earlier report (default: <report-dir>/report.json if there is one)')
    .option('--no-timings', 'do not balance by earlier durations')
    .option('--run-id <id>', 'name the run (default: a new one)')
    .option('--broker <url>', 'RabbitMQ URL (default: $WARREN_BROKER_URL, then amqp://localhost)')
    .option('--local', 'also start a dispatcher, an aggregator and a supervisor for this run')
    .option('--workers <n>', 'with --local: parallel workers (default: the number of CPUs)')
    .option('--image <name>', "the suite's image, for supervisors on the docker driver")
    .option('--driver <name>', 'with --local: local (child processes) or docker (a container per worker)')
    .option('--memory <size>', 'with --local --driver docker: memory limit per worker container, e.g. 512m')
    .option('--isolation <level>', 'with --local --driver docker: slot (a container per worker) or spec (a fresh one per spec)')
    .option('--network <mode>', 'with --local --driver docker: none or host')
    .option('--labels <list>', 'only supervisors with all these labels run it, e.g. ruby,gpu or os=linux')
    .option('--max-failures <n>', 'stop the run after n failed tests (counted once no re-run can save them); the rest are reported not run')
    .option('--fail-fast', 'count failures as they come, not after the re-run decision (alone: stop at the first)')
    .option('--setup-command <cmd>', 'run once per worker before its first test of the run (TEST_ENV_NUMBER, WARREN_WORKER_INDEX set), e.g. create its database')
    .option('--teardown-command <cmd>', 'run once per worker when it leaves the run')
    .option('--wait-for-workers', 'no supervisor is connected (or none has the labels): wait for one, saying so, instead of failing at once')
    .option('--log-file <file>', "the services' and the broker client's JSON log lines (the terminal gets one readable line for each warning)")
    .option('--verbose', 'JSON log lines on the terminal, debug level (instead of readable warnings)')
    .argument('[command...]', "the suite's test command, after -- (warren run --local -- mocha --require test/env test/): its framework, options and paths (default: package.json scripts.test, else detected)")
    .action(async (command: string[], flags: RunFlags) => {
      process.exitCode = await run({ ...flags, command });
    });

  cmd
    .command('follow')
    .description('follow a run started elsewhere to its report (exit code as warren run)')
    .argument('<run-id>')
    .option('--broker <url>', 'RabbitMQ URL (default: $WARREN_BROKER_URL, then amqp://localhost)')
    .option('--report-dir <dir>', 'where to write report.json, junit.xml, summary.md, report.html', 'warren-report')
    .option('--timeout <sec>', 'give up after this long', String(7 * 24 * 3600))
    .action(async (id: string, o: { broker?: string; reportDir: string; timeout: string }) => {
      const [{ follow }, { runIdArgument }, { writeReportFiles }, path] = await Promise.all([
        import('./follow.js'), import('./cancel.js'), import('../shared/report.js'), import('node:path'),
      ]);
      const runId = runIdArgument(id);
      await withBroker(o.broker, `warren follow ${runId}`, async (broker) => {
        process.exitCode = await follow({
          broker, runId, timeoutMs: positiveNumber('--timeout', o.timeout) * 1000, reportDir: o.reportDir,
          writeReport: (dir, r) => writeReportFiles(path.resolve(dir), r),
        });
      });
    });

  cmd
    .command('cancel')
    .description('cancel a run: its waiting specs are dropped, its running tests stopped on every host')
    .argument('<run-id>')
    .option('--broker <url>', 'RabbitMQ URL (default: $WARREN_BROKER_URL, then amqp://localhost)')
    .option('--wait <sec>', 'how long to wait for the report of the cancelled run', '30')
    .action(async (id: string, o: { broker?: string; wait: string }) => {
      const { cancel, runIdArgument } = await import('./cancel.js');
      const runId = runIdArgument(id);
      await withBroker(o.broker, `warren cancel ${runId}`, async (broker) => {
        process.exitCode = await cancel({ broker, runId, waitMs: positiveNumber('--wait', o.wait) * 1000, out: (l) => process.stdout.write(`${l}\n`) });
      });
    });

  cmd
    .command('status')
    .description('runs in progress (who, done/total, failures, workers, ETA), work waiting, supervisors per host')
    .option('--broker <url>', 'RabbitMQ URL (default: $WARREN_BROKER_URL, then amqp://localhost)')
    .option('--listen <sec>', 'how long to listen for the state and the heartbeats', '3')
    .action(async (o: { broker?: string; listen: string }) => {
      const { status } = await import('./status.js');
      await withBroker(o.broker, 'warren status', async (broker) => {
        await status({ broker, listenMs: positiveNumber('--listen', o.listen) * 1000, out: (l) => process.stdout.write(`${l}\n`) });
        process.exitCode = 0;
      });
    });

  cmd
    .command('runs')
    .description('recent runs and how they ended (from the runs log on the broker)')
    .option('--broker <url>', 'RabbitMQ URL (default: $WARREN_BROKER_URL, then amqp://localhost)')
    .option('--since <hours>', 'look back this many hours (at most a week)', '24')
    .option('--limit <n>', 'show at most this many, the latest', '20')
    .action(async (o: { broker?: string; since: string; limit: string }) => {
      const { runs } = await import('./status.js');
      const hours = Math.min(positiveNumber('--since', o.since), 7 * 24);
      await withBroker(o.broker, 'warren runs', async (broker) => {
        await runs({ broker, sinceMs: hours * 3600_000, limit: positiveInt('--limit', o.limit), out: (l) => process.stdout.write(`${l}\n`) });
        process.exitCode = 0;
      });
    });

  cmd
    .command('dispatcher')
    .description('start a dispatcher: turns run requests into specs on the work queue')
    .option('--broker <url>', 'RabbitMQ URL (default: $WARREN_BROKER_URL, then amqp://localhost)')
    .option('--history <file>', 'per-test durations from earlier runs, for balanced plans (default: $WARREN_HISTORY, then ./.warren/dispatcher/history.sqlite)')
    .option('--no-history', 'keep no history')
    .option('--signing-key-file <file>', 'accept only run requests signed with this key (default: $WARREN_SIGNING_KEY_FILE, then $WARREN_SIGNING_KEY)')
    .option('--require-roles', 'take each message only from the roles allowed to send it (RabbitMQ-checked user ids; see warren broker-users) ($WARREN_REQUIRE_ROLES=1)')
    .action(async (o: { broker?: string; history?: string | false; signingKeyFile?: string; requireRoles?: boolean }) => {
      await startDispatcher(o);
    });

  cmd
    .command('supervisor')
    .description('start a worker-supervisor: N isolated worker slots on this host')
    .option('--broker <url>', 'RabbitMQ URL (default: $WARREN_BROKER_URL, then amqp://localhost)')
    .option('--config <file>', 'JSON file with any of the settings below (flags and WARREN_* variables win)')
    .option('--workers <n>', 'worker slots (default: $WARREN_WORKERS, then 2)')
    .option('--id <name>', 'name of this supervisor (default: the host name, with -pid for the local driver)')
    .option('--dir <dir>', "parent of the slots' directories; with docker, a host path ($WARREN_SUPERVISOR_DIR)")
    .option('--grace <sec>', 'on SIGTERM, how long running tests may finish before they are requeued')
    .option('--driver <name>', 'local (child processes), docker (a container per worker) ($WARREN_DRIVER)')
    .option('--image <name>', 'docker: image when a run names none ($WARREN_IMAGE)')
    .option('--isolation <level>', 'docker: slot (one container per worker, default) or spec (a fresh one per spec)')
    .option('--memory <size>', 'docker: memory limit per container, e.g. 512m; 0 for none ($WARREN_MEMORY, default 4g)')
    .option('--cpus <n>', "docker: CPUs per container, e.g. 1.5; 0 for no limit ($WARREN_CPUS, default: the host's cores shared by the workers)")
    .option('--pids-limit <n>', 'docker: processes per container; 0 for no limit ($WARREN_PIDS_LIMIT, default 2048)')
    .option('--network <mode>', 'docker: none (default) or host ($WARREN_NETWORK)')
    .option('--user <user>', "docker: user the tests run as ($WARREN_USER; default: not root: the supervisor's own user, or 10001)")
    .option('--mount-suite', 'docker: mount the suite directory of each run into the containers, read-only')
    .option('--cache-dir <dir>', "caches that outlive runs: the frameworks' own per slot and suite, discovery ($WARREN_SUPERVISOR_CACHE_DIR, default ~/.cache/warren)")
    .option('--runner-max-memory <size>', 'retire a warm runner above this resident size after a batch, e.g. 2g ($WARREN_RUNNER_MAX_MEMORY)')
    .option('--labels <list>', 'what this host offers, e.g. ruby,chrome or os=linux: runs that require labels go only to supervisors with them all ($WARREN_LABELS)')
    .option('--allow-cwd <dirs>', "directories runs' suites must be in, comma-separated (local driver, --mount-suite; default anywhere) ($WARREN_ALLOW_CWD)")
    .option('--pass-env <names>', "this process's variables tests see (local driver), e.g. PATH,HOME,LC_* or * (never WARREN_*) ($WARREN_PASS_ENV)")
    .option('--mount-suite-rw', 'docker: mount the suite directory writable (read-only by default)')
    .option('--cap-add <caps>', 'docker: capabilities to give back, comma-separated (all are dropped) ($WARREN_CAP_ADD)')
    .option('--tmp-size <size>', "docker: the tests' TMPDIR is a tmpfs this big, emptied between specs; 0: on the host's disk ($WARREN_TMP_SIZE, default 1g)")
    .option('--read-only', "docker: the image's filesystem read-only (the slot's directory, HOME and /tmp stay writable) ($WARREN_READ_ONLY)")
    .option('--allow-image <patterns>', "images runs may name, comma-separated, * a wildcard, e.g. 'registry.local/*' (default: any) ($WARREN_ALLOW_IMAGE)")
    .option('--signing-key-file <file>', 'run only suites signed with this key, and open their secret env (default: $WARREN_SIGNING_KEY_FILE, then $WARREN_SIGNING_KEY)')
    .option('--require-roles', 'take each message only from the roles allowed to send it (RabbitMQ-checked user ids; see warren broker-users) ($WARREN_REQUIRE_ROLES=1)')
    .action(async (o: Record<string, string | boolean | undefined>) => {
      const { list, parseLabels } = await import('../services/worker-supervisor/config.js');
      await startSupervisor({
        labels: o.labels === undefined ? undefined : parseLabels(o.labels as string),
        allowCwd: o.allowCwd === undefined ? undefined : list(o.allowCwd as string),
        passEnv: o.passEnv === undefined ? undefined : list(o.passEnv as string),
        allowImage: o.allowImage === undefined ? undefined : list(o.allowImage as string),
        signingKeyFile: o.signingKeyFile as string | undefined,
        requireRoles: o.requireRoles as boolean | undefined,
        broker: o.broker as string | undefined,
        config: o.config as string | undefined,
        workers: o.workers as string | undefined,
        id: o.id as string | undefined,
        dir: o.dir as string | undefined,
        graceSec: o.grace as string | undefined,
        cacheDir: o.cacheDir as string | undefined,
        runnerMaxMemory: o.runnerMaxMemory as string | undefined,
        driver: o.driver as SupervisorConfigInput['driver'],
        docker: {
          image: o.image as string | undefined,
          isolation: o.isolation as 'slot' | 'spec' | undefined,
          memory: o.memory as string | undefined,
          cpus: o.cpus as string | undefined,
          pidsLimit: o.pidsLimit as string | undefined,
          network: o.network as 'none' | 'host' | undefined,
          user: o.user as string | undefined,
          capAdd: o.capAdd === undefined ? undefined : list(o.capAdd as string),
          readOnly: o.readOnly as boolean | undefined,
          tmpSize: o.tmpSize as string | undefined,
          mountSuite: o.mountSuite || o.mountSuiteRw ? true : undefined,
          mountSuiteWritable: o.mountSuiteRw as boolean | undefined,
        },
      });
    });

  cmd
    .command('aggregator')
    .description('start an aggregator: collects results, re-runs failures, writes reports')
    .option('--broker <url>', 'RabbitMQ URL (default: $WARREN_BROKER_URL, then amqp://localhost)')
    .option('--report-dir <dir>', 'reports go to <dir>/<run id>/ (default: $WARREN_REPORT_DIR, then ./warren-reports)')
    .option('--require-roles', 'take each message only from the roles allowed to send it (RabbitMQ-checked user ids; see warren broker-users) ($WARREN_REQUIRE_ROLES=1)')
    .action(async (o: { broker?: string; reportDir?: string; requireRoles?: boolean }) => {
      await startAggregator(o);
    });
  cmd
    .command('github')
    .description('receive GitHub webhooks: a pull request comment "/warren run" (or a push, --on-pull-request) builds, runs and puts the result on the pull request')
    .option('--broker <url>', 'RabbitMQ URL, a submitter\'s (default: $WARREN_BROKER_URL, then amqp://localhost)')
    .option('--port <n>', 'listen on this port', '8080')
    .option('--host <addr>', 'listen on this address (default: all)')
    .option('--phrase <text>', 'a comment that starts with this starts a run (then --pattern X / --exclude Y may follow)', '/warren run')
    .option('--allow <associations>', "whose comments may start runs (GitHub's author_association)", 'OWNER,MEMBER,COLLABORATOR')
    .option('--on-pull-request', 'also run when a pull request is opened, reopened or pushed to')
    .option('--build-command <cmd>', 'before the run, e.g. docker build -t reg/app:{sha} . && docker push reg/app:{sha} ({sha}, {repo}, {pr} filled in)')
    .option('--webhook-secret-file <file>', 'the webhook secret (default: $WARREN_GITHUB_WEBHOOK_SECRET)')
    .option('--token-file <file>', 'a token that may react, comment and set statuses (default: $GITHUB_TOKEN; $GITHUB_API_URL for GitHub Enterprise)')
    .option('--report-url <url>', 'linked from the comment and the status ({sha}, {repo}, {pr} filled in)')
    .requiredOption('--adapter <name>', 'the suite\'s framework')
    .requiredOption('--cwd <dir>', 'the suite directory on the workers (in the image)')
    .option('--image <name>', 'the suite image, e.g. registry.local/app:{sha}')
    .option('--discover-command <cmd>', 'command/junit adapters')
    .option('--run-command <template>', 'command/junit adapters')
    .option('--labels <list>', 'only supervisors with these labels run it')
    .option('--signing-key-file <file>', 'sign the run requests (default: $WARREN_SIGNING_KEY_FILE, then $WARREN_SIGNING_KEY)')
    .action(async (o: import('../services/github/main.js').GitHubFlags) => {
      const { startGitHub } = await import('../services/github/main.js');
      await startGitHub(o);
    });
  cmd
    .command('broker-users')
    .description("give a broker Warren's topology and one user per role, with generated passwords (an operator's step, with an administrator)")
    .requiredOption('--admin-url <url>', 'the management API as an administrator, e.g. http://admin:PASSWORD@broker:15672')
    .option('--amqp-url <url>', 'what the written URLs point at (default: amqp://<the admin URL host>:5672)')
    .option('--vhost <name>', 'the virtual host', '/')
    .option('--out <dir>', "where to write each user's URL (<user>.url, mode 600); an existing file keeps its password", 'warren-users')
    .option('--suffix <name>', 'name the users <role>.<suffix> (several clusters on one broker)')
    .option('--submitter <name>', 'a submitter of its own, e.g. submitter.team-a (repeatable; each reads only its own runs)', collect, [])
    .action(async (o: { adminUrl: string; amqpUrl?: string; vhost: string; out: string; suffix?: string; submitter: string[] }) => {
      const { brokerUsers } = await import('./users.js');
      const made = await brokerUsers({ adminUrl: o.adminUrl, amqpUrl: o.amqpUrl, vhost: o.vhost, outDir: o.out, suffix: o.suffix, submitters: o.submitter });
      for (const m of made) process.stdout.write(`${m.role.padEnd(10)} ${m.user.padEnd(28)} ${m.file}${m.created ? '' : ' (kept its password)'}\n`);
      process.exitCode = 0;
    });
  cmd
    .command('deploy')
    .description('bring a supervisor up (or --down) on every host of the build matrix, over SSH')
    .option('--matrix <file>', 'the build matrix (JSON; see deploy/matrix.example.json)', 'deploy/matrix.json')
    .option('--compose <file>', 'the worker compose file to upload', 'deploy/worker.compose.yml')
    .option('--down', 'take the supervisors down instead')
    .option('--host <name>', 'only this host (repeatable)', collect, [])
    .option('--deadline <sec>', 'give up on a host that has not answered by then', '120')
    .option('--retry <sec>', 'wait between attempts on a host that does not answer', '5')
    .action(async (o: { matrix: string; compose: string; down?: boolean; host: string[]; deadline: string; retry: string }) => {
      // loaded when used: SSH and its crypto are not what `warren run` needs to start fast
      const { deploy, loadMatrix } = await import('./deploy.js');
      const matrix = loadMatrix(o.matrix);
      if (!fs.existsSync(o.compose)) throw new UsageError(`--compose: ${o.compose} does not exist`);
      const out = (line: string) => process.stdout.write(`${line}\n`);
      const outcomes = await deploy({
        matrix, composeFile: o.compose, down: !!o.down, only: o.host, out,
        deadlineMs: positiveNumber('--deadline', o.deadline) * 1000, retryMs: positiveNumber('--retry', o.retry) * 1000,
      });
      for (const r of outcomes) out(`${r.ok ? 'ok    ' : 'FAILED'} ${r.host}: ${r.detail}`);
      process.exitCode = outcomes.every((r) => r.ok) ? 0 : 1;
    });

  cmd
    .command('hosts')
    .description("show each supervisor's state and workers (from their heartbeats), and matrix hosts that are silent")
    .option('--broker <url>', 'RabbitMQ URL (default: $WARREN_BROKER_URL, then amqp://localhost)')
    .option('--matrix <file>', 'also list the hosts of this matrix that send no heartbeat')
    .option('--listen <sec>', 'how long to listen for heartbeats', '5')
    .action(async (o: { broker?: string; matrix?: string; listen: string }) => {
      const { hosts, loadMatrix } = await import('./deploy.js');
      const matrix = o.matrix ? loadMatrix(o.matrix) : undefined;
      const broker = new Broker({ url: brokerUrl(o.broker), name: 'warren hosts', log: createLogger('cli', 'error'), connectAttempts: 3 });
      await broker.start();
      try {
        await hosts({ broker, listenMs: positiveNumber('--listen', o.listen) * 1000, matrix, out: (l) => process.stdout.write(`${l}\n`) });
      } finally {
        await broker.close();
      }
      process.exitCode = 0;
    });

  cmd
    .command('health')
    .description('exit 0 when the broker answers and the topology is there (for health checks)')
    .option('--broker <url>', 'RabbitMQ URL (default: $WARREN_BROKER_URL, then amqp://localhost)')
    .action(async (o: { broker?: string }) => {
      const { health } = await import('./deploy.js');
      process.stdout.write(`${await health(brokerUrl(o.broker), createLogger('cli', 'error'))}\n`);
      process.exitCode = 0;
    });
  return cmd;
}

/** A CLI connection to the broker for one command (bounded attempts), closed after it. */
async function withBroker(url: string | undefined, name: string, fn: (broker: Broker) => Promise<void>): Promise<void> {
  const broker = new Broker({ url: brokerUrl(url), name, log: createLogger('cli', process.env.WARREN_LOG_LEVEL ?? 'error'), connectAttempts: 3 });
  await broker.start();
  try {
    await fn(broker);
  } finally {
    await Promise.race([broker.close(), new Promise((r) => setTimeout(r, 5000))]);
  }
}

export async function main(argv: string[]): Promise<void> {
  try {
    await program().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : EXIT.error;
      return;
    }
    process.stderr.write(`warren: ${errorMessage(err)}\n`);
    process.exitCode = EXIT.error;
  }
}
