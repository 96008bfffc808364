// A build failure tied to a Dockerfile line, so the CLI can print `FILE:LINE: message`.
export class BuildError extends Error {
  constructor(
    message: string,
    /** 1-based Dockerfile line, 0 when the error is not about one line. */
    readonly line: number,
  ) {
    super(message);
    this.name = 'BuildError';
  }
}
