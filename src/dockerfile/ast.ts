// The parse tree of a Dockerfile, as BuildKit's parser produces it (frontend/dockerfile/parser):
// one node per instruction, arguments already split by the instruction's own rules, nothing expanded.

/** A here-document attached to an instruction (`RUN <<EOF`, `COPY <<a.txt /dst`). */
export interface Heredoc {
  /** The delimiter word without quotes, e.g. `EOF`. */
  name: string;
  /** The body, every line ending in "\n" (tabs already stripped for `<<-`). */
  content: string;
  /** False when the delimiter was quoted (`<<'EOF'`, `<<"EOF"`): the body is taken literally. */
  expand: boolean;
  /** True for `<<-`: leading tabs were stripped. */
  chomp: boolean;
  /** The file descriptor written before `<<` (e.g. `3<<EOF`), 0 when none was written. */
  fileDescriptor: number;
}

/** One instruction of a Dockerfile. */
export interface InstructionNode {
  /** The keyword in lower case: `from`, `run`, `copy`, ... (unknown keywords are kept as written, lowered). */
  keyword: string;
  /** Flags written before the arguments, as written: `--from=build`, `--chown=1:1`. */
  flags: string[];
  /**
   * The arguments. Exec (JSON) form: one per array element. Shell form: the rest of the line as one.
   * ENV and LABEL: triples `key, value, sep` (sep "" for `ENV k v`, "=" for `k=v`).
   * Whitespace-split instructions (FROM, ARG, EXPOSE, ...): one per word. ONBUILD: empty (see `onbuild`).
   */
  args: string[];
  /** True when the arguments were given in exec (JSON array) form. */
  json: boolean;
  /** For ONBUILD: the instruction it wraps. */
  onbuild?: InstructionNode;
  /** Here-documents, in the order their delimiters appear on the line. */
  heredocs: Heredoc[];
  /** The instruction as written, continuation lines joined (BuildKit's Node.Original). */
  original: string;
  /** 1-based line numbers of the first and last line of the instruction (heredoc bodies included). */
  startLine: number;
  endLine: number;
}

/** Parser directives found at the top of the file (`# syntax=`, `# escape=`, `# check=`). */
export interface Directives {
  escape: '\\' | '`';
  syntax?: string;
  check?: string;
}

export interface ParseWarning {
  line: number;
  message: string;
}

export interface ParseResult {
  instructions: InstructionNode[];
  directives: Directives;
  warnings: ParseWarning[];
}

/** A parse failure; `line` is 1-based, 0 when the error concerns the whole file. */
export class DockerfileSyntaxError extends Error {
  constructor(
    message: string,
    readonly line: number,
  ) {
    super(message);
    this.name = 'DockerfileSyntaxError';
  }
}
