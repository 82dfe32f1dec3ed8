/**
 * Who may do what on the broker: one RabbitMQ user per role, with configure/write/read
 * rights as narrow as RabbitMQ 3.10 allows (and topic rights on `warren.reports`), made by
 * `warren broker-users` from this table; and, where a right cannot tell two messages apart
 * (a direct exchange takes any routing key from whoever may write to it), which roles may
 * send each message type. Every publish carries its sender's user id (RabbitMQ refuses one
 * that is not the connection's user), and a service run with `--require-roles` takes a
 * message only from the roles allowed to send it: a submitter cannot forge a result, a
 * supervisor cannot plan a round.
 *
 *   role        may                                          may not
 *   dispatcher  take run requests, plan, publish jobs         read results or reports
 *   supervisor  take jobs, publish results and heartbeats     publish run requests, plans, reports
 *   aggregator  take results, journal, publish reports        take jobs
 *   submitter   publish run requests and cancels, read the    take jobs, publish results, read
 *               reports of its own runs (run ids `<user>-…`)  another submitter's reports
 *   observer    read heartbeats, runs in progress, runs log   publish anything
 *   admin       everything (the management UI, setting up)
 */
import { EXCHANGES, QUEUES } from './topology.js';

export const ROLES = ['dispatcher', 'supervisor', 'aggregator', 'submitter', 'observer', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** A user's role: its name, or its name up to the first `.` (`submitter.team-a`, `supervisor.ci-3`). */
export function roleOf(user: string | undefined): Role | undefined {
  if (!user) return undefined;
  const head = user.split('.')[0]!;
  return (ROLES as readonly string[]).includes(head) ? (head as Role) : undefined;
}

/** Who may send each message type (jobs given back by a slot come from a supervisor). */
export const SENDERS: Record<string, readonly Role[]> = {
  'run.request': ['submitter', 'admin'],
  'run.cancel': ['submitter', 'admin'],
  'round.request': ['aggregator'],
  'run.discovered': ['supervisor'],
  'run.accepted': ['dispatcher'],
  'round.planned': ['dispatcher'],
  'spec.result': ['supervisor'],
  'setup.failed': ['supervisor'],
  discover: ['dispatcher', 'supervisor'],
  spec: ['dispatcher', 'supervisor'],
};

/**
 * Why a message of `type` from `userId` is refused when roles are required, or null. A
 * submitter acts only on its own runs: their ids begin with its user name and a dash.
 */
export function senderProblem(type: string, userId: string | undefined, runId?: string): string | null {
  const allowed = SENDERS[type];
  if (!allowed) return null;
  const role = roleOf(userId);
  if (!userId) return `${type} without a user id (every Warren client sets it); only ${allowed.join(', ')} may send it`;
  if (!role || !allowed.includes(role)) return `${type} from user ${userId} (${role ?? 'no role'}); only ${allowed.join(', ')} may send it`;
  if (role === 'submitter' && runId !== undefined && !runId.startsWith(`${userId}-`)) {
    return `${type} from submitter ${userId} for run ${runId}: a submitter's run ids begin with "${userId}-"`;
  }
  return null;
}

/** --require-roles, or WARREN_REQUIRE_ROLES=1: services take messages only from their senders' roles. */
export function rolesRequired(flag?: boolean): boolean {
  return flag ?? ['1', 'true', 'yes'].includes((process.env.WARREN_REQUIRE_ROLES ?? '').toLowerCase());
}

/** The run id prefix of a user's runs (none for guest or a user without a role). */
export function runIdPrefix(user: string): string {
  return roleOf(user) === 'submitter' ? `${user}-` : 'run-';
}

export interface Permissions {
  configure: string;
  write: string;
  read: string;
  /** Topic rights on exchanges (routing keys a user may publish with / bind with). */
  topic: Array<{ exchange: string; write: string; read: string }>;
  tags: string[];
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** Exactly these names, or names beginning with one of `prefixes`. */
const names = (exact: string[], prefixes: string[] = []) => `^(${[...exact.map(esc), ...prefixes.map((p) => `${esc(p)}.*`)].join('|')})$`;
const NOTHING = '^$';

/** The rights of `user` in role `role` (the table in the header). */
export function permissionsFor(role: Role, user: string): Permissions {
  const reports = EXCHANGES.reports;
  switch (role) {
    case 'dispatcher': {
      const own = ['warren.dispatcher.runs.', 'warren.dispatcher.status.'];
      return {
        configure: names([], own),
        write: names([EXCHANGES.work, EXCHANGES.events, EXCHANGES.reports, EXCHANGES.dlx], own),
        read: names([QUEUES.dispatcher, QUEUES.history, EXCHANGES.reports, EXCHANGES.status], own),
        topic: [{ exchange: reports, write: '^(work\\.wake|run\\..+\\.finished)$', read: '^runs\\.state$' }],
        tags: [],
      };
    }
    case 'supervisor': {
      const own = ['warren.supervisor.'];
      return {
        configure: names([], own),
        write: names([EXCHANGES.work, EXCHANGES.events, EXCHANGES.status, EXCHANGES.reports, EXCHANGES.dlx], own),
        read: `^(warren\\.specs\\.[0-9]+|${esc(EXCHANGES.reports)}|${esc(own[0]!)}.*)$`,
        topic: [{ exchange: reports, write: '^work\\.wake$', read: '^(run\\.#\\.finished|runs\\.state|work\\.wake)$' }],
        tags: [],
      };
    }
    case 'aggregator': {
      const own = ['warren.status.aggregator.'];
      const lease = 'warren.aggregator.active';
      return {
        configure: names([lease], own),
        // amq.default: the journal and its checkpoint are published to their queues
        write: names(['amq.default', EXCHANGES.runs, EXCHANGES.reports, EXCHANGES.dlx, lease], own),
        read: names([QUEUES.aggregator, QUEUES.crashed, QUEUES.journal, QUEUES.checkpoint, EXCHANGES.status, lease], own),
        topic: [{ exchange: reports, write: '^(run\\..+\\.(progress|report|finished)|runs\\.state)$', read: NOTHING }],
        tags: [],
      };
    }
    case 'submitter': {
      const own = [`warren.cli.${user}-`];
      return {
        configure: names([], own),
        write: names([EXCHANGES.runs], own),
        read: names([EXCHANGES.reports, QUEUES.runsLog], own),
        topic: [{ exchange: reports, write: NOTHING, read: `^run\\.${esc(user)}-` }],
        tags: [],
      };
    }
    case 'observer': {
      const own = ['warren.status-cli.', 'warren.hosts.'];
      return {
        configure: names([], own),
        write: names([], own),
        read: names([EXCHANGES.reports, EXCHANGES.status, QUEUES.runsLog], own),
        topic: [{ exchange: reports, write: NOTHING, read: '^runs\\.state$' }],
        tags: ['monitoring'],
      };
    }
    case 'admin':
      return { configure: '.*', write: '.*', read: '.*', topic: [], tags: ['administrator'] };
  }
}
