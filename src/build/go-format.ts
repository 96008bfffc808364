// Go's fmt renderings that Docker writes into image history (`created_by`), so kiln's history reads
// exactly like Docker's: %v and %q of string slices and time.Duration's String().
import { goQuote } from '../dockerfile/dump.js';

/** fmt.Sprintf("%q", []string{...}) → `["a" "b"]`. */
export function goQuotedList(list: readonly string[]): string {
  return '[' + list.map(goQuote).join(' ') + ']';
}

/** fmt.Sprintf("%v", []string{...}) → `[a b]`. */
export function goList(list: readonly string[]): string {
  return '[' + list.join(' ') + ']';
}

/** time.Duration(ns).String(): "0s", "1.5s", "1m30s", "2h0m0s", "300ms", "1µs". */
export function goDuration(ns: number): string {
  if (ns === 0) return '0s';
  const sign = ns < 0 ? '-' : '';
  let n = Math.abs(ns);
  if (n < 1e9) {
    const [unit, div] = n < 1e3 ? ['ns', 1] : n < 1e6 ? ['µs', 1e3] : ['ms', 1e6];
    return sign + trimFraction(n / (div as number)) + unit;
  }
  const hours = Math.floor(n / 3600e9);
  n -= hours * 3600e9;
  const minutes = Math.floor(n / 60e9);
  n -= minutes * 60e9;
  const seconds = trimFraction(n / 1e9);
  if (hours > 0) return `${sign}${hours}h${minutes}m${seconds}s`;
  if (minutes > 0) return `${sign}${minutes}m${seconds}s`;
  return `${sign}${seconds}s`;
}

function trimFraction(value: number): string {
  return value.toFixed(9).replace(/\.?0+$/, '');
}
