/** JSON logs (pino): one line per event, with pipeline and component on every line; secrets redacted. */
import pino, { type Logger } from 'pino';
import { redactString } from './redact.ts';

export type { Logger };

export function createLogger(opts: { level?: string; destination?: pino.DestinationStream | number } = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: {
        paths: ['password', '*.password', 'sasl.password', '*.sasl.password', 'token', '*.token', 'secret', '*.secret'],
        censor: '[REDACTED]',
      },
      hooks: {
        // Messages and error texts may carry a URL with a password: scrub them.
        logMethod(args, method) {
          method.apply(this, args.map((a) => (typeof a === 'string' ? redactString(a) : a)) as Parameters<typeof method>);
        },
      },
      serializers: {
        err: (e: unknown) => {
          const s = pino.stdSerializers.err(e as Error);
          if (s && typeof s.message === 'string') s.message = redactString(s.message);
          if (s && typeof s.stack === 'string') s.stack = redactString(s.stack);
          return s;
        },
      },
    },
    pino.destination(opts.destination ?? 2),
  );
}
