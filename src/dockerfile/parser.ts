// The Dockerfile parser: source text to one node per instruction, with BuildKit's rules
// (moby/buildkit frontend/dockerfile/parser) for directives, line continuations, comments,
// per-instruction argument splitting and heredocs. Nothing is expanded here.
import {
  DockerfileSyntaxError,
  type Heredoc,
  type InstructionNode,
  type ParseResult,
  type ParseWarning,
} from './ast.js';
import { goStringBytes, goStringFromBytes, goToLower, goTrimLeftSpace, goTrimSpace } from './dump.js';
import { DirectiveState } from './parser-directives.js';
import { chompHeredocContent, heredocsFromLine, type HeredocHead } from './parser-heredoc.js';
import {
  ParseFailure,
  parseHealthConfig,
  parseIgnore,
  parseMaybeJSON,
  parseMaybeJSONToList,
  parseNameOrNameVal,
  parseNameVal,
  parseString,
  parseStringsWhitespaceDelimited,
  splitCommand,
  type ParsedArgs,
} from './parser-line-parsers.js';

/** BuildKit reads lines with Go's bufio.Scanner, whose default limit is 64 KiB per line. */
const MAX_LINE_BYTES = 65535;
const heredocKeywords = new Set(['run', 'copy', 'add']);
const forbiddenTriggers = new Set(['ONBUILD', 'MAINTAINER', 'FROM']);

/**
 * Parses a Dockerfile. Pass bytes to keep invalid UTF-8 exactly as BuildKit would (see dump.ts);
 * a string is taken as already decoded. Throws DockerfileSyntaxError.
 */
export function parseDockerfile(source: string | Uint8Array): ParseResult {
  const text = typeof source === 'string' ? source : goStringFromBytes(source);
  const { lines, tooLongLine } = splitLines(text);
  const state = new DirectiveState();
  const instructions: InstructionNode[] = [];
  const warnings: ParseWarning[] = [];
  let next = 0;
  let currentLine = 0;

  const fail = (e: unknown, line: number): never => {
    if (e instanceof ParseFailure) throw new DockerfileSyntaxError(e.message, line);
    throw e;
  };
  // A source line with its newline removed, leading blanks too for the first line of an
  // instruction; a comment reads as empty. Directives are recognised on the way.
  const processLine = (raw: string, stripLeft: boolean): string => {
    let line = raw.replace(/[\r\n]+$/, '');
    if (stripLeft) line = goTrimLeftSpace(line);
    try {
      state.possibleDirective(line);
    } catch (e) {
      fail(e, currentLine + 1);
    }
    return isComment(line) ? '' : line;
  };

  while (next < lines.length) {
    let raw = lines[next++]!;
    if (currentLine === 0 && raw.startsWith('\ufeff')) raw = raw.slice(1);
    const first = processLine(raw, true);
    currentLine++;
    const startLine = currentLine;
    let [part, ended] = state.trimContinuation(first);
    if (ended && part === '') continue;

    let joined = part;
    let hasEmptyContinuationLine = false;
    while (!ended && next < lines.length) {
      const rawNext = lines[next++]!;
      const line = processLine(rawNext, false);
      currentLine++;
      // Comments and blank lines inside a continued instruction are dropped.
      if (isComment(rawNext)) continue;
      if (goTrimLeftSpace(line) === '') {
        hasEmptyContinuationLine = true;
        continue;
      }
      [part, ended] = state.trimContinuation(line);
      joined += part;
    }
    const line = rejoinBytes(joined);
    if (hasEmptyContinuationLine) {
      warnings.push({ line: currentLine, message: 'Empty continuation line found in: ' + line });
    }

    let node: InstructionNode;
    try {
      node = nodeFromLine(line, state.escape);
    } catch (e) {
      return fail(e, startLine);
    }

    const target = node.onbuild ?? node;
    if (heredocKeywords.has(target.keyword) && !target.json && line.includes('<<')) {
      let heads: HeredocHead[];
      try {
        heads = heredocsFromLine(line);
      } catch (e) {
        return fail(e, startLine);
      }
      for (const head of heads) {
        let content = '';
        let terminated = false;
        while (next < lines.length) {
          const bodyLine = lines[next++]!;
          currentLine++;
          let candidate = bodyLine.replace(/[\r\n]+$/, '');
          if (head.chomp) candidate = candidate.replace(/^\t+/, '');
          if (candidate === head.name) {
            terminated = true;
            break;
          }
          content += bodyLine;
        }
        if (!terminated) throw new DockerfileSyntaxError('unterminated heredoc', startLine);
        const heredoc: Heredoc = { ...head, content: head.chomp ? chompHeredocContent(content) : content };
        node.heredocs.push(heredoc);
        if (node.onbuild) node.onbuild.heredocs.push(heredoc);
      }
    }

    node.startLine = startLine;
    node.endLine = currentLine;
    if (node.onbuild) {
      node.onbuild.startLine = startLine;
      node.onbuild.endLine = currentLine;
    }
    instructions.push(node);
  }

  if (instructions.length === 0) throw new DockerfileSyntaxError('file with no instructions', 0);
  if (tooLongLine > 0) {
    throw new DockerfileSyntaxError(`dockerfile line greater than max allowed size of ${MAX_LINE_BYTES}`, tooLongLine);
  }
  return { instructions, directives: state.directives, warnings };
}

/**
 * Lines with their "\n" kept. Reading stops before a line longer than BuildKit's scanner allows
 * (tooLongLine is its 1-based number, 0 when none); what was read before it still parses.
 */
function splitLines(text: string): { lines: string[]; tooLongLine: number } {
  const lines: string[] = [];
  for (let start = 0; start < text.length; ) {
    const newline = text.indexOf('\n', start);
    const end = newline < 0 ? text.length : newline + 1;
    const content = text.slice(start, newline < 0 ? end : newline);
    // Each UTF-16 unit is at most 3 UTF-8 bytes, so short lines need no byte count.
    if (content.length * 3 > MAX_LINE_BYTES && goStringBytes(content).length > MAX_LINE_BYTES) {
      return { lines, tooLongLine: lines.length + 1 };
    }
    lines.push(text.slice(start, end));
    start = end;
  }
  return { lines, tooLongLine: 0 };
}

function isComment(line: string): boolean {
  return goTrimLeftSpace(line).startsWith('#');
}

/** Joining continuation lines can complete a UTF-8 sequence split across them; Go would see the character. */
function rejoinBytes(line: string): string {
  return /[\udc80-\udcff]/.test(line) ? goStringFromBytes(goStringBytes(line)) : line;
}

function nodeFromLine(line: string, escape: number): InstructionNode {
  const { keyword: written, flags, rest } = splitCommand(line, escape);
  const keyword = goToLower(written);
  const node: InstructionNode = {
    keyword,
    flags,
    args: [],
    json: false,
    heredocs: [],
    original: line,
    startLine: 0,
    endLine: 0,
  };
  if (keyword === 'onbuild') {
    if (rest !== '') {
      const trigger = nodeFromLine(rest, escape);
      // BuildKit rejects these when it turns the node into an instruction; kiln rejects them here.
      const name = goTrimSpace(trigger.keyword).toUpperCase();
      if (name === 'ONBUILD') throw new ParseFailure("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
      if (forbiddenTriggers.has(name)) throw new ParseFailure(`${name} isn't allowed as an ONBUILD trigger`);
      node.onbuild = trigger;
    }
    return node;
  }
  const parsed = parseArguments(keyword, rest, escape);
  node.args = parsed.args;
  node.json = parsed.json;
  return node;
}

function parseArguments(keyword: string, rest: string, escape: number): ParsedArgs {
  switch (keyword) {
    case 'add':
    case 'copy':
    case 'volume':
      return parseMaybeJSONToList(rest);
    case 'cmd':
    case 'entrypoint':
    case 'run':
    case 'shell':
      return parseMaybeJSON(rest);
    case 'arg':
      return parseNameOrNameVal(rest, escape);
    case 'env':
      return parseNameVal(rest, 'ENV', escape);
    case 'label':
      return parseNameVal(rest, 'LABEL', escape);
    case 'expose':
    case 'from':
      return parseStringsWhitespaceDelimited(rest);
    case 'healthcheck':
      return parseHealthConfig(rest);
    case 'maintainer':
    case 'stopsignal':
    case 'user':
    case 'workdir':
      return parseString(rest);
    default:
      return parseIgnore();
  }
}
