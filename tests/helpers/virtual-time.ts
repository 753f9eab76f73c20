/**
 * Virtual time for code that mixes an RxJS scheduler with promises (generate, retry loops):
 * `advanceTo` runs the scheduler's actions one at a time, letting promise continuations run
 * between them, so code that awaits and then schedules again behaves as on real time.
 */
import { VirtualTimeScheduler } from 'rxjs';

/** One turn of the event loop: every queued promise continuation has run. Not a sleep. */
export const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Run every action due up to `frame` (virtual ms), in order, then leave the clock at `frame`. */
export async function advanceTo(scheduler: VirtualTimeScheduler, frame: number): Promise<void> {
  for (;;) {
    await settle();
    const next = scheduler.actions[0] as { delay?: number } | undefined;
    if (!next || next.delay === undefined || next.delay > frame) break;
    scheduler.maxFrames = next.delay;
    scheduler.flush();
  }
  scheduler.frame = Math.max(scheduler.frame, frame);
  await settle();
}
