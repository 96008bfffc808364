// kiln's command line: `executor` (kaniko's flags), `parse` (BuildKit's dump of a Dockerfile),
// and `warmer` (kaniko's warmer flags: fills the base-image cache). commander handles the subcommands and help; the executor's own
// flags follow kaniko's pflag syntax (see flag-parser.ts).
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { LOG_LEVELS, log, type LogLevel } from '../log/logger.js';
import { reportFailure, UsageError } from './errors.js';

// undici parses HTTP with llhttp compiled to WebAssembly. Once the parser is hot V8 recompiles it
// with TurboFan, ~200 ms of CPU for one huge function, which never pays back here: a blob's body
// crosses the parser in O(1) per chunk. Set before the first connection compiles the module.
setFlagsFromString('--liftoff-only');

const VERSION = '0.1.0';

async function main(argv: string[]): Promise<number> {
  // The executor's flags are kaniko's, parsed by kiln itself; commander only sees the other commands.
  // Each command loads only its own modules: start-up is part of every CI job's time.
  if (argv[0] === 'executor') return (await import('./executor-command.js')).runExecutor(argv.slice(1));
  if (argv[0] === 'warmer') return (await import('./warmer-command.js')).runWarmer(argv.slice(1));
  const [{ Command }, { dumpParse }, { parseDockerfile }] = await Promise.all([
    import('commander'), import('../dockerfile/dump.js'), import('../dockerfile/parser.js'),
  ]);

  let exitCode = 0;
  const program = new Command('kiln')
    .description('Build container images from Dockerfiles without a daemon or privileges (a drop-in for the kaniko executor).')
    .version(VERSION)
    .exitOverride()
    .showHelpAfterError();

  program
    .command('executor')
    .description('Build an image from a Dockerfile (kaniko\'s executor flags; see kiln executor --help)')
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .action(async () => {
      process.stdout.write((await import('./executor-command.js')).executorHelp());
    });

  program
    .command('parse')
    .description('Parse a Dockerfile and print it in BuildKit\'s dump format')
    .argument('<file>', 'Dockerfile to parse')
    .option('--dump', 'print the parse tree (the only output format)', true)
    .option('-v, --verbosity <level>', 'log level', 'info')
    .action((file: string, opts: { verbosity: string }) => {
      if (!(LOG_LEVELS as readonly string[]).includes(opts.verbosity)) throw new UsageError(`not a valid log level: "${opts.verbosity}"`);
      log.configure({ level: opts.verbosity as LogLevel });
      try {
        const result = parseDockerfile(readFileSync(file, 'utf8'));
        for (const w of result.warnings) log.warn(`${file}:${w.line}: ${w.message}`);
        process.stdout.write(dumpParse(result));
      } catch (e) {
        exitCode = reportFailure(e, file);
      }
    });

  program
    .command('warmer')
    .description('Download base images into the base-image cache (kaniko\'s warmer flags; see kiln warmer --help)')
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .action(async () => {
      process.stdout.write((await import('./warmer-command.js')).warmerHelp());
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help') return 0;
    if (code?.startsWith('commander.')) return 2;
    return reportFailure(e);
  }
  return exitCode;
}

let settled = false;
// If the event loop empties while the command is still pending, some stream stalled: that must never
// look like success (exit 0) to a CI job.
process.on('beforeExit', () => {
  if (!settled) {
    settled = true;
    process.exitCode = reportFailure(new Error('internal error: kiln stopped before finishing its work (a stalled stream); please report this with --verbosity debug output'));
  }
});
main(process.argv.slice(2)).then(
  (code) => { settled = true; process.exitCode = code; },
  (e: unknown) => { settled = true; process.exitCode = reportFailure(e); },
);
