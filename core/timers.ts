/**
 * Sleeps on the operator's scheduler (virtual time in tests) that are all cancelled at teardown.
 * Operators use it for startup checks and reconnect loops.
 */
import type { SchedulerLike } from 'rxjs';

export interface Sleeper {
  /** Resolves after `ms` on the scheduler, unless cancelled (then it never resolves). */
  sleep(ms: number): Promise<void>;
  /** Cancel every pending sleep. */
  cancelAll(): void;
}

export function sleeper(scheduler: SchedulerLike): Sleeper {
  const timers = new Set<{ unsubscribe(): void }>();
  return {
    sleep: (ms) =>
      new Promise<void>((resolve) => {
        const action = scheduler.schedule(() => {
          timers.delete(action);
          resolve();
        }, ms);
        timers.add(action);
      }),
    cancelAll() {
      for (const t of timers) t.unsubscribe();
      timers.clear();
    },
  };
}
