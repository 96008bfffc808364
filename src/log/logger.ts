// Kaniko-style log lines on stderr: the three formats kaniko's users already parse in CI logs
// (logrus' coloured text, plain key=value text, JSON), the same level names, and secret redaction.
import { isoSeconds } from '../util/iso-seconds.js';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'panic'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['color', 'text', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

const severity: Record<LogLevel, number> = { trace: 6, debug: 5, info: 4, warn: 3, error: 2, fatal: 1, panic: 0 };
// logrus prints four-letter level names in its text formats.
const shortName: Record<LogLevel, string> = {
  trace: 'TRAC', debug: 'DEBU', info: 'INFO', warn: 'WARN', error: 'ERRO', fatal: 'FATA', panic: 'PANI',
};
const colour: Record<LogLevel, number> = { trace: 37, debug: 37, info: 36, warn: 33, error: 31, fatal: 31, panic: 31 };
const longName: Record<LogLevel, string> = {
  trace: 'trace', debug: 'debug', info: 'info', warn: 'warning', error: 'error', fatal: 'fatal', panic: 'panic',
};

export interface LoggerOptions {
  level: LogLevel;
  format: LogFormat;
  timestamp: boolean;
  write?: (line: string) => void;
  now?: () => Date;
}

export class Logger {
  private options: Required<LoggerOptions>;
  private readonly startedAt: number;
  private readonly secrets = new Set<string>();

  constructor(options: Partial<LoggerOptions> = {}) {
    this.options = {
      level: 'info',
      format: 'color',
      timestamp: false,
      write: (line) => process.stderr.write(line),
      now: () => new Date(),
      ...options,
    };
    this.startedAt = this.options.now().getTime();
  }

  configure(options: Partial<LoggerOptions>): void {
    this.options = { ...this.options, ...options };
  }

  get level(): LogLevel {
    return this.options.level;
  }

  enabled(level: LogLevel): boolean {
    return severity[level] <= severity[this.options.level];
  }

  /** Values that must never reach a log line (passwords, tokens, secret build args). */
  addSecret(value: string): void {
    if (value.length >= 3) this.secrets.add(value);
  }

  redact(text: string): string {
    let out = text;
    for (const s of this.secrets) out = out.split(s).join('***');
    return out;
  }

  trace(message: string): void { this.log('trace', message); }
  debug(message: string): void { this.log('debug', message); }
  info(message: string): void { this.log('info', message); }
  warn(message: string): void { this.log('warn', message); }
  error(message: string): void { this.log('error', message); }

  log(level: LogLevel, message: string): void {
    if (!this.enabled(level)) return;
    this.options.write(this.formatLine(level, this.redact(message)) + '\n');
  }

  formatLine(level: LogLevel, message: string): string {
    const now = this.options.now();
    switch (this.options.format) {
      case 'json':
        return JSON.stringify({ level: longName[level], msg: message, time: isoSeconds(now) });
      case 'text':
        return `time="${isoSeconds(now)}" level=${longName[level]} msg=${quoteIfNeeded(message)}`;
      case 'color': {
        const when = this.options.timestamp
          ? isoSeconds(now)
          : String(Math.floor((now.getTime() - this.startedAt) / 1000)).padStart(4, '0');
        return `\x1b[${colour[level]}m${shortName[level]}\x1b[0m[${when}] ${message}`;
      }
    }
  }
}


// logrus quotes a text-format value only when it holds characters outside a safe set.
function quoteIfNeeded(value: string): string {
  return /^[A-Za-z0-9\-._/@^+]*$/.test(value) && value !== '' ? value : JSON.stringify(value);
}

/** The process-wide logger; the CLI configures it once from the flags. */
export const log = new Logger();
