// The error COPY and ADD raise for what the Dockerfile asks wrongly (a missing source, a bad flag value);
// the stage builder turns it into `Dockerfile:LINE: message`. In a module of its own so that the modules
// copy.ts is split into can raise it without importing copy.ts.
export class CopyError extends Error {}
