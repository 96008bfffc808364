// RFC 3339 time to the second, as Go's time.RFC3339 writes it (image configs, history, kaniko's log
// lines): JavaScript's toISOString adds milliseconds that Docker and kaniko never write.
export function isoSeconds(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
