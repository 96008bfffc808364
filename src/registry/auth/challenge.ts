// WWW-Authenticate parsing (RFC 7235 section 4.1): one header value may hold several challenges,
// each a scheme followed by a token68 or by comma-separated auth-params whose values are tokens or
// quoted strings. Lenient where registries are sloppy (unquoted URLs, stray commas).

export interface AuthChallenge {
  /** The auth-scheme in lower case ("basic", "bearer", ...). */
  scheme: string;
  /** auth-params by lower-case name; a repeated `scope` is joined with spaces, other repeats keep the first. */
  params: Record<string, string>;
}

// RFC 7230 tchar.
const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
// A token68 directly after the scheme, ending the challenge (e.g. "Negotiate abc+/=").
const TOKEN68_AT_END = /^[A-Za-z0-9\-._~+/]+=*[ \t]*(?=,|$)/;

export function parseWwwAuthenticate(header: string): AuthChallenge[] {
  const challenges: AuthChallenge[] = [];
  let current: AuthChallenge | undefined;
  let pos = 0;
  const skip = (chars: RegExp): void => {
    while (pos < header.length && chars.test(header[pos]!)) pos++;
  };

  while (pos < header.length) {
    skip(/[\s,]/);
    if (pos >= header.length) break;
    const name = readToken();
    if (name === '') {
      pos++; // not a token character: skip it rather than give up on the rest
      continue;
    }
    skip(/[ \t]/);
    if (header[pos] === '=') {
      pos++;
      skip(/[ \t]/);
      const value = header[pos] === '"' ? readQuoted() : readBare();
      if (current) addParam(current, name.toLowerCase(), value);
      continue;
    }
    // A token not followed by "=" starts a new challenge.
    current = { scheme: name.toLowerCase(), params: {} };
    challenges.push(current);
    const token68 = TOKEN68_AT_END.exec(header.slice(pos));
    if (token68) pos += token68[0].length; // credentials-style data; no registry challenge needs it
  }
  return challenges;

  function readToken(): string {
    const start = pos;
    while (pos < header.length && TOKEN_CHAR.test(header[pos]!)) pos++;
    return header.slice(start, pos);
  }

  function readBare(): string {
    const start = pos;
    while (pos < header.length && !/[\s,]/.test(header[pos]!)) pos++;
    return header.slice(start, pos);
  }

  function readQuoted(): string {
    pos++; // opening quote
    let value = '';
    while (pos < header.length) {
      const ch = header[pos]!;
      if (ch === '"') {
        pos++;
        return value;
      }
      if (ch === '\\' && pos + 1 < header.length) {
        value += header[pos + 1];
        pos += 2;
        continue;
      }
      value += ch;
      pos++;
    }
    return value; // unterminated: take the rest
  }
}

function addParam(challenge: AuthChallenge, name: string, value: string): void {
  const existing = challenge.params[name];
  if (existing === undefined) challenge.params[name] = value;
  else if (name === 'scope' && value !== '') challenge.params[name] = existing === '' ? value : `${existing} ${value}`;
}
