/**
 * The one lifecycle of every long-lived part of Warren (dispatcher, aggregator, supervisor,
 * slot): it starts, runs, drains on SIGTERM (running work finishes or goes back to its
 * queue), and ends stopped, or failed when an invariant broke and it stopped loudly.
 */
export type Lifecycle = 'starting' | 'running' | 'draining' | 'stopped' | 'failed';
